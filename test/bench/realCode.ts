/**
 * The scanner and every rewrite on real public model files the fixtures were not written
 * from: per-kind precision and recall against hand labels (test/realcode/labels.json), and
 * for every file and rewrite kind: the output compiles, a second run changes nothing,
 * --revert gives the file back byte for byte, and (where the file imports with CPU torch)
 * the rewritten model computes what the original does. Also how many of the found sites get a
 * figure, alone and with the config classes next to each HF file in the installed transformers
 * of the labelled version (the scan's `relatedDir`).
 *
 *   node esbuild.mjs --tests && node out/test/bench/realCode.js DIR [--python PY] [--json OUT]
 *
 * DIR holds the files named in labels.json (third-party code: fetched, never committed). Without
 * DIR (nor MEMBIT_REALCODE_DIR) the script says so and exits 0; a file that is missing or whose
 * sha256 differs fails it (exit 1), as does any rewrite that breaks an invariant.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { applyEdits, applyLever, convertAll, type ConvertOptions, type Lever, LEVERS, revertAll } from '../../src/core/rewrite';
import { createScanner, type Scanner, type SiteKind } from '../../src/core/scan';
import { repoRoot } from '../unit/scanSupport';

/** The kinds scored: sites in model code (the advisor's training-loop kinds need training scripts). */
const KINDS: readonly SiteKind[] = ['dropout', 'dropout-call', 'attn-dropout', 'fused-attn-dropout', 'attn-mask', 'ffn', 'eager-attn'];

interface LabelledFile {
  name: string;
  repo: string;
  path: string;
  commit?: string;
  sha256: string;
  labels: Record<string, string[]>;
}

type Rewrite = { kind: 'convert'; name: string; options: ConvertOptions } | { kind: 'lever'; name: string; lever: Lever };

const REWRITES: readonly Rewrite[] = [
  { kind: 'convert', name: 'dropout packed', options: { dropout: 'packed' } },
  { kind: 'convert', name: 'dropout recompute', options: { dropout: 'recompute' } },
  { kind: 'convert', name: 'ffn 2:4', options: { dropout: null, ffn: '2:4' } },
  ...LEVERS.map((lever): Rewrite => ({ kind: 'lever', name: `lever ${lever}`, lever })),
];

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

async function rewrite(s: Scanner, text: string, file: string, r: Rewrite): Promise<{ text: string; changed: number }> {
  if (r.kind === 'lever') {
    const l = await applyLever(text, r.lever);
    return { text: l.text, changed: l.applied };
  }
  const sites = s.scan(text, file).sites;
  const c = convertAll(text, sites, r.options);
  return { text: applyEdits(text, c.edits), changed: c.converted.length };
}

async function main(): Promise<number> {
  const dir = process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : process.env['MEMBIT_REALCODE_DIR'];
  const labels = JSON.parse(readFileSync(join(repoRoot(), 'test', 'realcode', 'labels.json'), 'utf8')) as { labelled: string; files: LabelledFile[] };
  if (!dir) {
    console.log(`realCode: skipped: no folder of real model files given (pass DIR or set MEMBIT_REALCODE_DIR); test/realcode/labels.json names the ${labels.files.length} files and where each comes from`);
    return 0;
  }
  const problems: string[] = [];
  for (const f of labels.files) {
    const p = join(dir, f.name);
    if (!existsSync(p)) problems.push(`${f.name}: missing (${f.repo} ${f.path}${f.commit ? ` @ ${f.commit}` : ''})`);
    else if (createHash('sha256').update(readFileSync(p)).digest('hex') !== f.sha256) problems.push(`${f.name}: sha256 differs from the labelled version`);
  }
  if (problems.length) {
    console.error(`realCode: the labelled files are not all in ${dir}:\n  ${problems.join('\n  ')}`);
    return 1;
  }

  const s = await createScanner();
  const tally = new Map(KINDS.map((k) => [k, { tp: 0, fp: 0, fn: 0 }]));
  const misses: string[] = [];
  for (const f of labels.files) {
    const text = readFileSync(join(dir, f.name), 'utf8');
    const found = new Map<number, string[]>();
    for (const site of s.scan(text, f.name).sites) {
      if (!KINDS.includes(site.kind)) continue;
      const l = site.range.startLine + 1;
      found.set(l, [...(found.get(l) ?? []), site.kind]);
    }
    const lines = text.split('\n');
    const expected = new Map(Object.entries(f.labels).map(([l, k]) => [Number(l), [...k]]));
    for (const l of [...new Set([...expected.keys(), ...found.keys()])].sort((a, b) => a - b)) {
      const exp = expected.get(l) ?? [];
      for (const kind of found.get(l) ?? []) {
        const t = tally.get(kind as SiteKind) as { tp: number; fp: number; fn: number };
        const i = exp.indexOf(kind);
        if (i >= 0) {
          exp.splice(i, 1);
          t.tp++;
        } else {
          t.fp++;
          misses.push(`${f.name}:${l}: unexpected ${kind}: ${lines[l - 1]?.trim()}`);
        }
      }
      for (const kind of exp) {
        (tally.get(kind as SiteKind) as { fn: number }).fn++;
        misses.push(`${f.name}:${l}: missed ${kind}: ${lines[l - 1]?.trim()}`);
      }
    }
  }
  const python = arg('--python') ?? process.env['MEMBIT_PYTHON'] ?? join(repoRoot(), '.venv', 'bin', 'python');
  const estimates = estimateCoverage(s, dir, labels.files, python);
  const pct = (a: number, b: number) => (b === 0 ? '-' : (a / b).toFixed(2));
  console.log(`real code: ${labels.files.length} files, labelled ${labels.labelled}\n| kind | labelled | found | false positives | missed | precision | recall |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |`);
  for (const [k, t] of tally) console.log(`| \`${k}\` | ${t.tp + t.fn} | ${t.tp} | ${t.fp} | ${t.fn} | ${pct(t.tp, t.tp + t.fp)} | ${pct(t.tp, t.tp + t.fn)} |`);
  if (misses.length) console.log(`\nmisses and extras:\n  ${misses.join('\n  ')}`);
  console.log(`\n${estimates}`);

  // Every rewrite kind on every file.
  const work = mkdtempSync(join(tmpdir(), 'membit-realcode-'));
  const failures: string[] = [];
  const outputs: { file: string; orig: string; out: string; rewrite: string }[] = [];
  try {
    const rows: string[] = [];
    for (const r of REWRITES) {
      let changedFiles = 0;
      let sites = 0;
      for (const f of labels.files) {
        const text = readFileSync(join(dir, f.name), 'utf8');
        const once = await rewrite(s, text, f.name, r);
        if (once.text === text) continue;
        changedFiles++;
        sites += once.changed;
        const twice = await rewrite(s, once.text, f.name, r);
        if (twice.text !== once.text) failures.push(`${r.name} ${f.name}: a second run changed the file again`);
        const back = applyEdits(once.text, revertAll(once.text).edits);
        if (back !== text) failures.push(`${r.name} ${f.name}: --revert does not give the original back`);
        const out = join(work, `${outputs.length}-${f.name}`);
        writeFileSync(out, once.text);
        outputs.push({ file: f.name, orig: join(dir, f.name), out, rewrite: r.name });
      }
      rows.push(`| ${r.name} | ${changedFiles} | ${sites} |`);
    }
    // Compile every output (syntax only: third-party imports are not needed for that).
    const manifest = join(work, 'manifest.json');
    writeFileSync(manifest, JSON.stringify(outputs));
    const check = spawnSync(python, [join(repoRoot(), 'test', 'realcode', 'check_outputs.py'), manifest], { encoding: 'utf8', timeout: 20 * 60 * 1000, env: { ...process.env, PYTHONPATH: join(repoRoot(), 'kernels') } });
    if (check.status !== 0) failures.push(`check_outputs.py failed (${check.status}): ${check.stderr.slice(-3000)}`);
    console.log(`\nrewrites (each output compiles, a second run changes nothing, --revert restores the file byte for byte)\n| rewrite | files changed | sites |\n| --- | ---: | ---: |\n${rows.join('\n')}`);
    if (check.stdout) console.log(`\n${check.stdout.trim()}`);
    const out = arg('--json');
    if (out) writeFileSync(out, JSON.stringify({ labelled: labels.labelled, tally: Object.fromEntries(tally), misses, failures }, null, 1));
  } finally {
    rmSync(work, { recursive: true, force: true });
    s.dispose();
  }
  if (failures.length) {
    console.error(`\nFAILED:\n  ${failures.join('\n  ')}`);
    return 1;
  }
  return 0;
}

/**
 * Sites of the scored kinds with a figure (an estimate whose source is not "unknown"), scanned
 * alone and, for HF files, with their folder in the installed transformers when its version is
 * the labelled one, so the config class the file imports is read as the editor and the CLI do.
 */
function estimateCoverage(s: Scanner, dir: string, files: readonly LabelledFile[], python: string): string {
  const count = (f: LabelledFile, relatedDir?: string) => {
    const text = readFileSync(join(dir, f.name), 'utf8');
    const sites = s.scan(text, f.name, relatedDir ? { relatedDir } : {}).sites.filter((x) => KINDS.includes(x.kind));
    return { sites: sites.length, figured: sites.filter((x) => x.estimate.source !== 'unknown').length };
  };
  const hf = files.filter((f) => f.repo.startsWith('transformers=='));
  const lines = ['estimates: sites found with a figure (estimate source other than "unknown")', '| files | sites | with a figure, file alone | with the config class next to it |', '| --- | ---: | ---: | ---: |'];
  const alone = files.map((f) => count(f));
  const sum = (xs: { sites: number; figured: number }[], k: 'sites' | 'figured') => xs.reduce((a, x) => a + x[k], 0);
  const probe = spawnSync(python, ['-c', 'import os, transformers; print(transformers.__version__); print(os.path.dirname(os.path.dirname(transformers.__file__)))'], { encoding: 'utf8', timeout: 120_000 });
  const [version, site] = probe.status === 0 ? probe.stdout.trim().split('\n') : [];
  const wanted = hf[0]?.repo.slice('transformers=='.length);
  const hfAlone = hf.map((f) => count(f));
  if (!version || !site || !wanted || version !== wanted || hf.some((f) => f.repo !== hf[0]?.repo)) {
    lines.push(`| all ${files.length} | ${sum(alone, 'sites')} | ${sum(alone, 'figured')} | - |`);
    lines.push(`(with configs: skipped: ${!version ? `no transformers importable with ${python}` : `installed transformers ${version}, labelled ${wanted}`})`);
    return lines.join('\n');
  }
  const hfWith = hf.map((f) => count(f, dirname(join(site, f.path))));
  lines.push(`| HF transformers ${version} (${hf.length}) | ${sum(hfAlone, 'sites')} | ${sum(hfAlone, 'figured')} | ${sum(hfWith, 'figured')} |`);
  lines.push(`| all ${files.length} | ${sum(alone, 'sites')} | ${sum(alone, 'figured')} | ${sum(alone, 'figured') - sum(hfAlone, 'figured') + sum(hfWith, 'figured')} |`);
  return lines.join('\n');
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
    process.exit(1);
  },
);
