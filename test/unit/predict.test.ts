/**
 * membit predict: the CLI runs the real predictor (CUDA faked, no GPU) on the GPT sample, and the
 * report reader, status label and argv builder are checked on what it wrote.
 */
import { formatBytes } from '../../src/core/units';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { main } from '../../src/core/cli/main';
import { validate } from '../../src/core/report/jsonSchema';
import { parseReport } from '../../src/core/report/model';
import { predictArgv, readPrediction, relabelPredicted, statusLabel } from '../../src/core/report/prediction';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import type { Report } from '../../src/core/report/types';
import { capture } from './cliCapture';
import { defined } from '../defined';

const REPO = resolve(__dirname, '..', '..', '..');
const GPT = join(REPO, 'samples', 'gpt_tiny.py');
const PYTHON = process.env['MEMBIT_PYTHON'] || join(REPO, '.venv', 'bin', 'python');
const GPT_ARGS = ['--batch-size', '4', '--seq-len', '32', '--n-layer', '2', '--n-embd', '64', '--n-head', '4', '--data-bytes', '100000'];

let predicted: { report: Report; text: string } | undefined;

async function predictedReport(): Promise<{ report: Report; text: string }> {
  if (predicted) return predicted;
  assert.ok(existsSync(PYTHON), `no Python with torch at ${PYTHON}: set MEMBIT_PYTHON`);
  const dir = mkdtempSync(join(tmpdir(), 'membit-predict-'));
  const out = join(dir, 'pred.json');
  const io = capture(REPO);
  const code = await main(['predict', '--python', PYTHON, '--gpu', 'A100-80GB', '--out', out, '--', GPT, ...GPT_ARGS], io);
  assert.equal(code, 0, io.stderr);
  assert.match(io.stdout, /^predicted peak \d+(\.\d+)? [KMG]iB on A100-80GB · fits$/m);
  assert.match(io.stdout, /\+ CUDA context .*per-GPU table/);
  // The sample prints loss.item(): a value a fake run cannot know, named with its line.
  assert.match(io.stdout, /not followed: \.item\(\) at samples\/gpt_tiny\.py:\d+/);
  const text = readFileSync(out, 'utf8');
  const parsed = parseReport(text, REPORT_SCHEMA, out);
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
  predicted = { report: parsed.report, text };
  return predicted;
}

test('membit predict writes a valid report marked predicted for the chosen GPU', { timeout: 300_000 }, async () => {
  const { report, text } = await predictedReport();
  assert.deepEqual(validate(REPORT_SCHEMA, JSON.parse(text) as unknown), []);
  const p = readPrediction(report);
  assert.ok(p);
  assert.equal(p.gpuKey, 'A100-80GB');
  assert.equal(p.complete, true);
  assert.equal(report.run.device.type, 'cuda');
  assert.equal(p.peakAllocated, report.summary.peak_allocated);
  assert.ok(p.deviceNeed > p.peakAllocated, 'the card must also hold the context and the allocator slack');
  assert.ok(report.lines.length > 0 && report.lines.every((l) => l.file === 'samples/gpt_tiny.py'));
});

test('a card too small: the caching allocator replay says where the step runs out of memory', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-predict-oom-'));
  const out = join(dir, 'pred.json');
  const io = capture(REPO);
  // 400 MiB of the card are the CUDA context (the table's figure for a card given by size) and 64
  // MiB the two cuBLAS workspaces: 2 MiB are left, less than the step's segments.
  const code = await main(['predict', '--python', PYTHON, '--gpu', '466MiB', '--out', out, '--', GPT, ...GPT_ARGS], io);
  assert.equal(code, 0, io.stderr);
  assert.match(io.stdout, /^predicted peak \S+ [KMG]iB on \S+ · does not fit$/m);
  assert.match(io.stdout, /needs \S+ [KMG]iB of \S+ [KMG]iB on .*: reserved \S+ [KMG]iB \(the caching allocator's segments over the step\) \+ CUDA context/);
  assert.match(io.stdout, /does not fit: out of memory asking for \S+ [KMG]iB at samples\/gpt_tiny\.py:\d+, with \S+ [KMG]iB allocated and \S+ [KMG]iB reserved/);
  const p = defined(readPrediction(JSON.parse(readFileSync(out, 'utf8')) as Report), 'prediction');
  assert.equal(p.fits, false);
  const oom = defined(p.outOfMemory, 'out_of_memory');
  // The request did not fit what the card leaves after the context.
  const context = defined(p.fixed.find((f) => !f.inAllocator), 'context').bytes;
  assert.ok(oom.reserved + oom.request > p.totalBytes - context, JSON.stringify(oom));
  assert.ok(defined(p.peakReserved, 'peak_reserved') + context > p.totalBytes);
});

test('status label: predicted, partial, searched and measured reports read differently', { timeout: 300_000 }, async () => {
  const { text } = await predictedReport();
  const doc = JSON.parse(text) as Report & { run: { prediction: Record<string, unknown> } };
  // One unit module formats every byte count on screen (src/core/units.ts).
  const gib = formatBytes;
  const peak = doc.run.prediction.peak_allocated;
  doc.run.prediction.max_batch = { arg: '--batch-size', largest: 11, probes: [] };
  assert.equal(statusLabel(doc), `predicted peak ${gib(peak)} on A100-80GB · fits to batch 11`);
  doc.run.prediction.max_batch = { arg: '--seq-len', largest: null, probes: [] };
  assert.equal(statusLabel(doc), `predicted peak ${gib(peak)} on A100-80GB · no seq-len fits`);
  doc.run.prediction.complete = false;
  assert.equal(statusLabel(doc), `predicted peak ≥ ${gib(peak)} on A100-80GB (partial)`);
  // A malformed prediction is not trusted as one.
  const bad = JSON.parse(text) as Report & { run: { prediction: Record<string, unknown> } };
  // Through an untyped view: the report type would not let gpu be a string, which is the point.
  (bad.run.prediction as Record<string, unknown>)['gpu'] = 'A100';
  assert.equal(readPrediction(bad), undefined);
  // Without run.prediction the report is a measured one.
  const measured = JSON.parse(text) as Report & { run: { prediction?: unknown } };
  delete measured.run.prediction;
  assert.equal(readPrediction(measured), undefined);
  assert.equal(statusLabel(measured), `peak ${gib(defined(measured.summary.peak_allocated, 'peak'))}`);
});

test('predictArgv passes the script\'s arguments as argv entries, never through a shell', () => {
  const argv = predictArgv({ script: '/w/t.py', args: ['--name', 'a b; rm -rf /'], out: '/o.json', gpu: 'L4', variants: ['packed', 'sdpa+bf16'], findMaxBatch: true, batchArg: '--seq-len', ranks: 4 });
  assert.deepEqual(argv, ['-m', 'membit.predict', '--out', '/o.json', '--gpu', 'L4', '--variants', 'packed,sdpa+bf16', '--ranks', '4',
    '--find-max-batch', '--batch-arg=--seq-len', '--', '/w/t.py', '--name', 'a b; rm -rf /']);
});

test('membit predict refuses a malformed GPU name and a missing script with the fix', async () => {
  const io = capture(REPO);
  assert.equal(await main(['predict', '--gpu', 'A100;x', '--', GPT], io), 2);
  assert.match(io.stderr, /--gpu: "A100;x" is not a GPU name or capacity/);
  const io2 = capture(REPO);
  assert.equal(await main(['predict', '--', 'nope.py'], io2), 2);
  assert.match(io2.stderr, /script not found/);
});

test('scanner hints built from a predicted report say predicted, not measured', () => {
  assert.equal(relabelPredicted('dropout mask 16 KiB → 2 KiB packed (measured)'), 'dropout mask 16 KiB → 2 KiB packed (predicted)');
  assert.equal(relabelPredicted('AdamW state 1.2 MB (8 B/param, measured) · fused: faster step'), 'AdamW state 1.2 MB (8 B/param, predicted) · fused: faster step');
  assert.equal(relabelPredicted('eager attention: 3 MB probs (3 MB measured)'), 'eager attention: 3 MB probs (3 MB predicted)');
  assert.equal(relabelPredicted('attn mask 4 MB (estimate @ B=32)'), 'attn mask 4 MB (estimate @ B=32)');
});
