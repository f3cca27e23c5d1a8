/** Reads the 2:4 speed-advice tables shipped with the membit package (`membit/sparse/advice/*.json`). */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAdviceTable, type SparseAdviceTable } from './sparse24';

export interface LoadedAdvice {
  tables: SparseAdviceTable[];
  /** One line per file that could not be used; the others still load. */
  errors: string[];
}

/** `kernelsDir` is the folder holding the `membit` package (dist/kernels in the extension). */
export function loadAdviceTables(kernelsDir: string): LoadedAdvice {
  const dir = join(kernelsDir, 'membit', 'sparse', 'advice');
  const out: LoadedAdvice = { tables: [], errors: [] };
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json')).sort();
  } catch (e) {
    out.errors.push(`no 2:4 advice tables in ${dir}: ${(e as Error).message}`);
    return out;
  }
  for (const n of names) {
    try {
      const t = parseAdviceTable(JSON.parse(readFileSync(join(dir, n), 'utf8')), n);
      if (t instanceof Error) out.errors.push(t.message);
      else out.tables.push(t);
    } catch (e) {
      out.errors.push(`${n}: ${(e as Error).message}`);
    }
  }
  return out;
}
