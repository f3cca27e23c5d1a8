/**
 * Large-snapshot benchmark: `node out/test/bench/snapshotBench.js [--entries 1000000] [--no-baseline]`.
 *
 * Generates (once, cached in the temp folder) a synthetic snapshot laid out as torch
 * writes one (snapshotGen.ts), then runs each variant in a fresh process:
 *   membit         the worker-thread reader as the editor uses it, while the main thread
 *                  runs a 10 ms timer whose largest lateness is the longest host stall;
 *                  "first overlay" is the report arriving plus indexing it for the
 *                  overlays and building the report view's model on the main thread
 *   python-pickle  the baseline: Python's own pickle.load of the same file (what the
 *                  usual tooling does), time and peak memory; skipped without Python
 * Prints device, versions, date and commit, a table, and writes
 * test/bench/results/snapshot-<entries>-<date>.json.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance as nodePerformance } from 'node:perf_hooks';
import { indexReport } from '../../src/core/report/model';
import { buildView } from '../../src/core/report/view';
import { loadSnapshotsInWorker } from '../../src/core/snapshot/load';
import { repoRoot, writeResult } from './benchKit';
import { generateSnapshot, type GenStats } from './snapshotGen';
import { itemAt } from '../../src/core/arrays';
import { defined } from '../defined';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function runMembit(file: string): Promise<Record<string, number | string>> {
  // A workspace holding the generated stacks' model files, so frames map onto it.
  const root = mkdtempSync(join(tmpdir(), 'membit-snapbench-ws-'));
  mkdirSync(join(root, 'model'));
  for (let i = 0; i < 97; i++) writeFileSync(join(root, 'model', `layer_${i}.py`), '');
  const workerPath = join(repoRoot(), 'dist', 'snapshotWorker.js');
  // The control: the same timer's lateness with nothing to do, for 3 s. On a shared,
  // loaded machine the operating system alone delays it; the load's stall is over this.
  const idleGap = await new Promise<number>((resolve) => {
    let worst = 0;
    let prev = performance.now();
    const t = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - prev - 10);
      prev = now;
    }, 10);
    setTimeout(() => {
      clearInterval(t);
      resolve(worst);
    }, 3000);
  });
  let maxGap = 0;
  let maxGapAt = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    if (now - last - 10 > maxGap) {
      maxGap = now - last - 10;
      maxGapAt = now;
    }
    last = now;
  }, 10);
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const elu0 = nodePerformance.eventLoopUtilization();
  const [loaded] = await loadSnapshotsInWorker({ workerPath, paths: [file], root });
  const tReport = performance.now();
  if (!loaded?.report) throw new Error(loaded?.error ?? 'no report');
  const index = indexReport(loaded.report);
  buildView(loaded.report, 'bench');
  const tOverlay = performance.now();
  const cpu = process.cpuUsage(cpu0);
  // The main thread's own busy time over the whole load (its event loop's active time).
  const elu = nodePerformance.eventLoopUtilization(elu0);
  // Let the timer see the main thread's last stretch of work.
  await new Promise((r) => setTimeout(r, 30));
  clearInterval(timer);
  return {
    report_s: (tReport - t0) / 1000,
    first_overlay_s: (tOverlay - t0) / 1000,
    worker_parse_s: (loaded.ms ?? 0) / 1000,
    // Both threads' CPU time to the first overlay: the wall time an unloaded core would take.
    cpu_s: (cpu.user + cpu.system) / 1e6,
    max_host_stall_ms: Math.round(maxGap),
    idle_timer_max_lateness_ms: Math.round(idleGap),
    max_stall_ended_s: (maxGapAt - t0) / 1000,
    host_busy_ms: Math.round(elu.active),
    host_work_after_report_ms: Math.round(tOverlay - tReport),
    worker_heap_mb: Math.round(loaded.heapMb ?? 0),
    max_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    peak_allocated: loaded.report.summary.peak_allocated ?? -1,
    entries: loaded.report.source.entries,
    lines_files: index.files.size,
  };
}

function runPython(file: string): Record<string, number | string> | null {
  const py = process.env['MEMBIT_PYTHON'] ?? join(repoRoot(), '.venv', 'bin', 'python');
  if (!existsSync(py)) return null;
  // The baseline loads our own generated file; it is never used on untrusted input.
  const code = 'import pickle,resource,sys,time\nt=time.perf_counter()\nwith open(sys.argv[1],"rb") as f: d=pickle.load(f)\ns=time.perf_counter()-t\nprint(s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024, len(d["device_traces"][0]))';
  const r = spawnSync(py, ['-c', code, file], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) return { error: (r.stderr || 'failed').trim().split('\n').slice(-1)[0] ?? 'failed' };
  const [s = NaN, rss = NaN, n = NaN] = r.stdout.trim().split(' ').map(Number);
  return { load_s: s, max_rss_mb: Math.round(rss), entries: n };
}

async function child(variant: string, file: string): Promise<void> {
  const out = variant === 'membit' ? await runMembit(file) : runPython(file);
  process.stdout.write(`@@result ${JSON.stringify(out)}\n`);
}

function parent(): void {
  const entries = Number(arg('entries') ?? 1_000_000);
  const dir = join(tmpdir(), 'membit-snapbench');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `snapshot-${entries}.pickle`);
  const statsFile = `${file}.json`;
  let gen: GenStats;
  if (existsSync(file) && existsSync(statsFile)) gen = JSON.parse(readFileSync(statsFile, 'utf8')) as GenStats;
  else {
    const t = performance.now();
    gen = generateSnapshot(file, entries);
    writeFileSync(statsFile, JSON.stringify(gen));
    console.log(`generated ${file}: ${(gen.bytes / 1e6).toFixed(0)} MB, ${gen.entries} entries in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const results: Record<string, unknown> = {};
  const variants = process.argv.includes('--no-baseline') ? ['membit'] : ['membit', 'python-pickle'];
  for (const variant of variants) {
    const r = spawnSync(process.execPath, [__filename, '--child', variant, '--file', file], { encoding: 'utf8', maxBuffer: 1 << 24 });
    const line = r.stdout.split('\n').find((l) => l.startsWith('@@result '));
    results[variant] = line ? JSON.parse(line.slice(9)) : { error: `exit ${r.status}: ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}` };
  }
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot(), encoding: 'utf8' }).trim();
  } catch {
    // not a checkout
  }
  const py = process.env['MEMBIT_PYTHON'] ?? join(repoRoot(), '.venv', 'bin', 'python');
  const record = {
    date: new Date().toISOString(),
    commit,
    device: `${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, load average ${loadavg()[0]?.toFixed(1)}`,
    node: process.version,
    python: existsSync(py) ? execFileSync(py, ['-c', 'import sys;print(sys.version.split()[0])'], { encoding: 'utf8' }).trim() : null,
    file: { bytes: statSync(file).size, entries: gen.entries, generator_peak: gen.peak },
    results,
  };
  console.log(JSON.stringify(record, null, 2));
  const m = results['membit'] as Record<string, number> | undefined;
  if (m?.['peak_allocated'] !== undefined && m['peak_allocated'] !== gen.peak) console.log(`WARNING: peak ${m['peak_allocated']} differs from the generator's ${gen.peak}`);
  const tag = variants.length === 1 ? '-membit-only' : '';
  writeResult(`snapshot-${entries}${tag}-${record.date.slice(0, 10)}.json`, record);
}

const ci = process.argv.indexOf('--child');
if (ci >= 0) void child(itemAt(process.argv, ci + 1), defined(arg('file'), '--file'));
else parent();
