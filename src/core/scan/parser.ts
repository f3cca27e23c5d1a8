/**
 * Loads web-tree-sitter, the Python grammar and the scanner's queries.
 *
 * The files live in different places depending on who runs us: next to the bundle
 * (`dist/tree-sitter.wasm`, `dist/queries/`) for the extension and the CLI, and in
 * `node_modules/` and `src/core/scan/queries/` for tests and benchmarks bundled into
 * `out/`. An explicit directory always wins; otherwise we look next to the running
 * script, then walk up to the package root.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Language, Parser, Query } from 'web-tree-sitter';
// `require`, not `import`: bundlers pick a package's "import" build for import
// statements, and web-tree-sitter's ESM build needs import.meta, which a CommonJS
// bundle (the extension, the CLI) does not have. Its "require" build is CommonJS.
import TreeSitter = require('web-tree-sitter');

export interface AssetOptions {
  /** A folder holding `tree-sitter.wasm`, `tree-sitter-python.wasm` and `queries/` (e.g. the extension's `dist/`). */
  assetDir?: string;
  /** Overrides where the two `.wasm` files are looked up. */
  wasmDir?: string;
  /** Overrides where the `.scm` query files are looked up. */
  queryDir?: string;
}

export interface AssetPaths {
  runtimeWasm: string;
  pythonWasm: string;
  queryDir: string;
}

const RUNTIME_WASM = 'tree-sitter.wasm';
const PYTHON_WASM = 'tree-sitter-python.wasm';

/** Folders from the running script up to the filesystem root. */
function ancestors(start: string): string[] {
  const out: string[] = [];
  let dir = resolve(start);
  for (let i = 0; i < 12; i++) {
    out.push(dir);
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return out;
}

function here(): string {
  // esbuild's CommonJS output keeps __dirname: the folder of the bundle being run.
  return typeof __dirname === 'string' ? __dirname : process.cwd();
}

/** Finds the wasm files and queries, or throws an Error naming every place it looked. */
export function locateAssets(opts: AssetOptions = {}): AssetPaths {
  const tried = new Set<string>();
  const pick = (cands: string[], probe: (d: string) => boolean): string | undefined => {
    for (const c of cands) {
      tried.add(c);
      if (probe(c)) return c;
    }
    return undefined;
  };
  const roots = [...new Set([...ancestors(here()), ...ancestors(process.cwd())])];
  const given = [opts.wasmDir, opts.assetDir].filter((d): d is string => !!d);
  // Each file on its own: the runtime and the grammar live in different packages in development.
  const findWasm = (file: string, pkg: string): string | undefined => {
    const dir = pick(
      [...given, ...roots, ...roots.map((r) => join(r, 'dist')), ...roots.map((r) => join(r, 'node_modules', pkg))],
      (d) => existsSync(join(d, file)),
    );
    return dir ? join(dir, file) : undefined;
  };
  const runtimeWasm = findWasm(RUNTIME_WASM, 'web-tree-sitter');
  const pythonWasm = findWasm(PYTHON_WASM, 'tree-sitter-python');
  const queryCands = [
    ...(opts.queryDir ? [opts.queryDir] : []),
    ...(opts.assetDir ? [join(opts.assetDir, 'queries')] : []),
    ...roots.map((r) => join(r, 'queries')),
    ...roots.map((r) => join(r, 'dist', 'queries')),
    ...roots.map((r) => join(r, 'src', 'core', 'scan', 'queries')),
  ];
  const queryDir = pick(queryCands, (d) => existsSync(join(d, 'facts.scm')));
  if (!runtimeWasm || !pythonWasm || !queryDir) {
    const missing = [!runtimeWasm ? RUNTIME_WASM : '', !pythonWasm ? PYTHON_WASM : '', !queryDir ? 'queries/facts.scm' : ''].filter(Boolean).join(', ');
    throw new Error(`membit scanner: cannot find ${missing}; looked in: ${[...tried].join(', ')}`);
  }
  return { runtimeWasm, pythonWasm, queryDir };
}

/** The compiled grammar and queries, shared by every parser in the process. */
export interface ScanRuntime {
  language: Language;
  /** Query name (file name without `.scm`) → compiled query. */
  queries: ReadonlyMap<string, Query>;
  newParser(): Parser;
  /** Milliseconds spent loading WASM and compiling queries (the cold start). */
  initMs: number;
}

// web-tree-sitter keeps one WebAssembly instance per process; initialising twice
// would replace it under live parsers, so the first load is shared.
let runtimePromise: Promise<ScanRuntime> | undefined;

export function loadRuntime(opts: AssetOptions = {}): Promise<ScanRuntime> {
  if (runtimePromise) return runtimePromise;
  const started = performance.now();
  const p = (async () => {
    const paths = locateAssets(opts);
    // Reading the binary ourselves avoids the Emscripten glue guessing paths from the bundle.
    const wasmBinary = readFileSync(paths.runtimeWasm);
    await TreeSitter.Parser.init({ wasmBinary, locateFile: (name: string) => join(dirname(paths.runtimeWasm), name) });
    const language = await TreeSitter.Language.load(readFileSync(paths.pythonWasm));
    const queries = new Map<string, Query>();
    for (const name of readdirSync(paths.queryDir)) {
      if (!name.endsWith('.scm')) continue;
      queries.set(name.slice(0, -4), new TreeSitter.Query(language, readFileSync(join(paths.queryDir, name), 'utf8')));
    }
    const initMs = performance.now() - started;
    return {
      language,
      queries,
      initMs,
      newParser() {
        const parser = new TreeSitter.Parser();
        parser.setLanguage(language);
        return parser;
      },
    } satisfies ScanRuntime;
  })();
  runtimePromise = p;
  // A failed load (files missing) may be retried with other options.
  p.catch(() => {
    if (runtimePromise === p) runtimePromise = undefined;
  });
  return p;
}
