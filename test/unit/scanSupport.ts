/** Shared by the scanner tests: the repository root, fixtures, one scanner per process. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createScanner, type Scanner } from '../../src/core/scan';
import { itemAt } from '../../src/core/arrays';

/** The repository root, found from the bundle's folder (out/test/unit) or the sources. */
export function repoRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'test', 'fixtures', 'scan'))) return dir;
    dir = dirname(dir);
  }
  throw new Error(`repository root not found above ${__dirname}`);
}

export const FIXTURES = () => join(repoRoot(), 'test', 'fixtures', 'scan');

export function fixture(name: string): string {
  return readFileSync(join(FIXTURES(), name), 'utf8');
}

let shared: Promise<Scanner> | undefined;
export function scanner(): Promise<Scanner> {
  shared ??= createScanner();
  return shared;
}

/** `# expect: a, b` markers → (0-based line → kinds). */
export function expectations(text: string): Map<number, string[]> {
  const out = new Map<number, string[]>();
  text.split('\n').forEach((l, i) => {
    const m = /#\s*expect:\s*([a-z\- ,]+)/.exec(l);
    if (m) out.set(i, itemAt(m, 1).split(/[ ,]+/).filter(Boolean));
  });
  return out;
}
