/**
 * The memory advisor: findings on the real samples, estimates against hand-computed
 * figures and against a real measured report, torch capabilities (from the real
 * `python -m membit.capabilities`), severities, and the editor's texts.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { main } from '../../src/core/cli/main';
import type { ScanJson } from '../../src/core/cli/scan';
import type { Report } from '../../src/core/report/types';
import {
  blockActivationBytes,
  checkpointSaving,
  eagerBytesPerElement,
  formatHint,
  formatHover,
  hintSites,
  parseCapabilities,
  probeCapabilities,
  type ScanResult,
  type Site,
  shapeHintsFromReport,
  siteSeverity,
  summarizeClasses,
  type TorchCapabilities,
  transformerParams,
} from '../../src/core/scan';
import { capture } from './cliCapture';
import { reportFixture } from './reportFixtures';
import { BERT_LARGE_SDPA, COMPILED_DROPOUT, signedPercent } from '../../src/core/advice/measured';
import { convertDropout } from '../../src/core/rewrite';
import { fixture, repoRoot, scanner } from './scanSupport';
import { defined } from '../defined';
import { itemAt } from '../../src/core/arrays';

const sample = (name: string) => readFileSync(join(repoRoot(), 'samples', name), 'utf8');
const report = (name: string) => JSON.parse(readFileSync(reportFixture(name), 'utf8')) as Report;
const kind = (r: ScanResult, k: string): Site[] => r.sites.filter((s) => s.kind === k);
const one = (r: ScanResult, k: string): Site => {
  const all = kind(r, k);
  assert.equal(all.length, 1, `${k}: ${JSON.stringify(all.map((s) => s.range))}`);
  return defined(all[0], `${k} site`);
};
/** 0-based line of the first line holding `needle`. */
const lineOf = (text: string, needle: string) => {
  const i = text.split('\n').findIndex((l) => l.includes(needle));
  assert.ok(i >= 0, needle);
  return i;
};

const ALL: TorchCapabilities = {
  schema: 'membit.capabilities/1',
  torch: '2.13.0+cpu',
  features: {
    sdpa: true, 'sdpa-scale': true, 'is-causal': true, 'autocast-bf16-cuda': true, 'autocast-bf16-cpu': true, cuda: false, 'cuda-bf16': false,
    'checkpoint-non-reentrant': true, 'adamw-fused': true, 'adamw-foreach': true,
  },
};
/** What Debian's torch 1.13 (a CPU-only build) answers: no SDPA, no is_causal, no fused AdamW, no CUDA autocast. */
const OLD: TorchCapabilities = {
  ...ALL,
  torch: '1.13.0a0',
  features: { ...ALL.features, sdpa: false, 'sdpa-scale': false, 'is-causal': false, 'autocast-bf16-cuda': false, 'adamw-fused': false },
};

/** An interpreter with torch: MEMBIT_PYTHON (set by scripts/test-all.sh) or the repository's .venv. */
function torchPython(): string {
  const env = process.env['MEMBIT_PYTHON'];
  if (env) return env;
  const venv = join(repoRoot(), '.venv', 'bin', 'python');
  assert.ok(existsSync(venv), 'no Python with torch: set MEMBIT_PYTHON (scripts/setup-python.sh prints one)');
  return venv;
}

test('samples/gpt_tiny.py: eager attention at the softmax, the causal mask, the fp32 step, the block loop and AdamW', async () => {
  const s = await scanner();
  const text = sample('gpt_tiny.py');
  const r = s.scan(text, 'samples/gpt_tiny.py');
  assert.equal(r.error, undefined);

  const eager = one(r, 'eager-attn');
  const softmax = lineOf(text, 'att = F.softmax(att, dim=-1)');
  assert.deepEqual(eager.range, { startLine: softmax, startCol: 14, endLine: softmax, endCol: 14 + 'F.softmax(att, dim=-1)'.length });
  assert.equal(eager.code, 'membit.eager-attn');
  assert.equal(eager.callee, 'F.softmax');
  assert.deepEqual(eager.attention, {
    form: 'eager-block',
    softmaxLine: softmax,
    scoresLine: lineOf(text, 'att = (q @ k.transpose'),
    maskLine: lineOf(text, 'att = att.masked_fill'),
    dropoutLine: lineOf(text, 'att = self.attn_dropout(att)'),
    outputLine: lineOf(text, 'y = att @ v'),
    funcName: 'forward',
  });
  assert.equal(eager.advice?.lever, 'sdpa');
  assert.deepEqual(eager.advice.requires, ['sdpa']);
  // The 40% lever before the 6% one: both findings say that fused attention makes packing moot.
  assert.match(eager.message, /packing this attention dropout becomes moot/);
  const attnDrop = kind(r, 'attn-dropout');
  assert.equal(attnDrop.length, 1);
  assert.match(attnDrop[0]?.message ?? '', /Fused attention removes this mask altogether/);

  assert.ok(kind(r, 'attn-mask').length >= 1);

  const step = one(r, 'no-autocast');
  assert.equal(step.range.startLine, lineOf(text, 'loss.backward()'));
  assert.equal(step.callee, 'loss.backward');
  assert.equal(step.advice?.lever, 'autocast');

  const ckpt = one(r, 'checkpoint');
  const loop = lineOf(text, 'for block in self.h:');
  // The range is the loop's header, `for` to the colon.
  assert.deepEqual(ckpt.range, { startLine: loop, startCol: 8, endLine: loop, endCol: 28 });
  assert.equal(ckpt.className, 'GPT');
  assert.deepEqual(ckpt.args, { target: 'block', iter: 'self.h' });

  const opt = one(r, 'optimizer');
  assert.equal(opt.range.startLine, lineOf(text, 'optimizer = torch.optim.AdamW('));
  assert.equal(opt.resolved, 'torch.optim.AdamW');
  assert.equal(opt.binding, 'optimizer');
  assert.match(opt.message, /8 B per parameter/);
  assert.match(opt.message, /fused=True/);
  assert.match(opt.message, /ZeRO, FSDP/);
  for (const site of [eager, step, ckpt, opt]) assert.match(site.message, /Not checked against an installed torch\.$/);
});

test('samples/bert_mlm.py: attn_implementation=attn defaults to "eager" through --attn, so it is reported at the variable', async () => {
  const s = await scanner();
  const text = sample('bert_mlm.py');
  const r = s.scan(text, 'samples/bert_mlm.py');
  const built = lineOf(text, '_from_config(config, attn_implementation=attn)');
  const eager = one(r, 'eager-attn');
  const col = itemAt(text.split('\n'), built).indexOf('=attn)') + 1;
  assert.deepEqual(eager.range, { startLine: built, startCol: col, endLine: built, endCol: col + 4 });
  assert.deepEqual(eager.attention, { form: 'hf-eager', setting: 'attn_implementation', valueText: 'attn', defaultLine: lineOf(text, 'ap.add_argument("--attn"') });
  assert.match(eager.message, /^Model built with eager attention/);
  assert.match(eager.remedy ?? '', /`attn` defaults to "eager" \(line 68\); make "sdpa" the default/);
  // Trained (loss.backward()) and never gradient_checkpointing_enable(): checkpointing is proposed at the construction.
  const ckpt = one(r, 'checkpoint');
  assert.equal(ckpt.range.startLine, built);
  assert.equal(ckpt.callee, 'BertForMaskedLM._from_config');
  assert.equal(ckpt.resolved, 'transformers.BertForMaskedLM._from_config');
  assert.match(ckpt.remedy ?? '', /gradient_checkpointing_enable/);
  one(r, 'optimizer');
  // torch.autocast(..., enabled=args.bf16) is in the file: mixed precision is the user's choice there.
  assert.equal(kind(r, 'no-autocast').length, 0);
  // With --attn sdpa as the default there is nothing to say about attention.
  const sdpa = s.scan(text.replace('default="eager")', 'default="sdpa")'), 'samples/bert_mlm.py');
  assert.equal(kind(sdpa, 'eager-attn').length, 0);
});

test('estimates from static shapes equal the hand-computed formulas', async () => {
  const s = await scanner();
  // gpt_tiny's dataclass gives n_head=4, n_embd=128, n_layer=4, vocab_size=256; B and L from the setting.
  const r = s.scan(sample('gpt_tiny.py'), 'gpt_tiny.py', { shapes: { batch: 32, seqLen: 512 } });
  const [B, H, L, d, n] = [32, 4, 512, 128, 4];

  // Eager attention, fp32 with dropout: per element 4 B probabilities + 1 B mask + 4 B dropped copy = 9 B,
  // less what SDPA keeps (4 B log-sum-exp per row), over n layers.
  const eager = one(r, 'eager-attn');
  assert.equal(eagerBytesPerElement(false, true), 9);
  assert.equal(eager.advice?.savingBytes, n * (B * H * L * L * 9 - B * H * L * 4));
  assert.equal(eager.advice.savingBytes, 1_206_910_976);
  assert.equal(eager.advice.basis, 'estimate');
  assert.equal(eager.estimate.elements, n * B * H * L * L);
  assert.equal(formatHint(eager), 'eager attention: ~1.12 GiB probs+mask → fused SDPA (estimate @ B=32 H=4 L=512)');

  // Checkpointing: per block A = 66·B·L·d (fp32) + 9·B·H·L² (eager), X = 4·B·L·d kept per block;
  // saving = (n−1)·A − n·X.
  const A = 66 * B * L * d + 9 * B * H * L * L;
  const X = 4 * B * L * d;
  assert.equal(blockActivationBytes({ batch: B, seqLen: L, hidden: d, heads: H, amp: false, eager: true }), A);
  const ckpt = one(r, 'checkpoint');
  assert.equal(ckpt.advice?.savingBytes, (n - 1) * A - n * X);
  assert.equal(ckpt.advice.savingBytes, 1_287_651_328);
  assert.equal(checkpointSaving(n, A, X), 1_287_651_328);
  assert.match(ckpt.advice.cost ?? '', /extra forward/);

  // bf16 autocast: n·(A_fp32 − A_bf16) with A_bf16 = 34·B·L·d + 7·B·H·L², less 2 B per block weight (bf16 copies).
  const Abf16 = 34 * B * L * d + 7 * B * H * L * L;
  const weights = n * (4 * d * d + 2 * d * 4 * d);
  const amp = one(r, 'no-autocast');
  assert.equal(amp.advice?.savingBytes, n * (A - Abf16) - 2 * weights);
  assert.equal(amp.advice.savingBytes, 535_298_048);

  // AdamW state: 8 B per parameter; parameters n·(4d² + 2·d·4d) + V·d + L·d.
  const opt = one(r, 'optimizer');
  const params = weights + 256 * d + L * d;
  assert.equal(transformerParams({ layers: n, hidden: d, vocab: 256, positions: L }), params);
  assert.equal(opt.estimate.elements, params);
  assert.equal(opt.estimate.stateBytes, 8 * params);
  assert.equal(opt.advice?.savingBytes, undefined, 'fused/foreach does not shrink the state');

  // Without a batch size every figure is per sample, and says so.
  const per = s.scan(sample('gpt_tiny.py'), 'gpt_tiny.py');
  const e1 = one(per, 'eager-attn');
  assert.equal(e1.estimate.perSample, true);
  assert.equal(e1.advice?.savingBytes, 4 * (4 * 128 * 128 * 9 - 4 * 128 * 4));
  assert.match(formatHint(e1), /\/sample probs\+mask → fused SDPA \(estimate @ H=4 L=128\)$/);
});

test('the formulas agree with measurements: BERT-large on an H200, and the GPT sample measured by the harness', () => {
  // The committed advisor run: HF BERT-large 16×512 in fp32 with attention dropout, eager → SDPA.
  // Eager keeps 9 B per probability element (softmax output, mask, dropped copy); SDPA keeps
  // 4 B of statistics per row instead.
  const measuredSaving = BERT_LARGE_SDPA.baselinePeak - BERT_LARGE_SDPA.leverPeak;
  const predicted = 24 * (16 * 16 * 512 * 512 * eagerBytesPerElement(false, true) - 16 * 16 * 512 * 4);
  assert.ok(Math.abs(predicted - measuredSaving) / measuredSaving < 0.01, `predicted ${predicted} vs measured ${measuredSaving}`);
  // The CPU report of gpt_tiny (B=4, L=64, d=64, H=2, fp32; CPU dropout masks are float, 4 B): each of the
  // two blocks kept 1,581,056 B; the per-block formula gives within 1% of that.
  const rep = report('gpt_tiny_cpu_baseline.json');
  const block = rep.modules.filter((m: { path: string }) => m.path.startsWith('h.0.')).reduce((a: number, m: { saved_bytes: number }) => a + m.saved_bytes, 0);
  assert.equal(block, 1_581_056);
  const formula = blockActivationBytes({ batch: 4, seqLen: 64, hidden: 64, heads: 2, amp: false, eager: true, maskBytes: 4 });
  assert.ok(Math.abs(formula - block) / block < 0.01, `formula ${formula} vs measured ${block}`);
});

test('estimates from a real measured report: the lines and modules it names, the optimizer state, the peak', async () => {
  const s = await scanner();
  const rep = report('gpt_tiny_cpu_baseline.json');
  const hints = shapeHintsFromReport(rep, 'samples/gpt_tiny.py');
  const r = s.scan(sample('gpt_tiny.py'), 'samples/gpt_tiny.py', { hints });
  const saved = (line: number) => {
    const l = rep.lines.find((x) => x.line === line);
    assert.ok(l?.at_peak_bytes !== undefined, `no line ${line} in the report`);
    return l.at_peak_bytes;
  };

  // Probabilities on the softmax line, the mask on the dropout line, and the dropped copy kept by `@ v`
  // (that line also keeps v: counted at most the probabilities' size).
  const eager = one(r, 'eager-attn');
  assert.equal(eager.advice?.basis, 'measured');
  assert.equal(eager.advice.savingBytes, saved(56) + saved(57) + Math.min(saved(58), saved(56)));
  assert.equal(eager.advice.savingBytes, 786_432);
  assert.equal(formatHint(eager), 'eager attention: 768 KiB probs+mask → fused SDPA (measured)');

  // The two blocks under `h` (built on line 96) kept 3,162,112 B; one is re-materialised in backward.
  const ckpt = one(r, 'checkpoint');
  assert.equal(ckpt.advice?.basis, 'measured');
  assert.equal(ckpt.advice.savingBytes, 3_162_112 - 1_581_056);

  const opt = one(r, 'optimizer');
  assert.equal(opt.advice?.basis, 'measured');
  assert.equal(opt.estimate.stateBytes, rep.summary.optimizer_state);
  assert.match(formatHint(opt), /^AdamW state 1\.05 MiB \(8 B\/param, measured\) · fused=True: faster step$/);

  // Autocast's figure is derived from the measured activations, and still called an estimate.
  const amp = one(r, 'no-autocast');
  assert.equal(amp.advice?.basis, 'estimate');
  assert.equal(amp.advice.savingBytes, Math.round(rep.summary.activations_at_peak / 2 - rep.summary.params / 2));

  // The peak the severities compare with: what the harness tracked at the peak (CPU).
  assert.equal(r.peakBytes, rep.summary.tracked_at_peak);
  assert.equal(siteSeverity(eager, r.peakBytes), 'information');
  // A report of another script says nothing about this file's optimizer or step.
  const other = s.scan(sample('gpt_tiny.py'), 'elsewhere/train.py', { hints: shapeHintsFromReport(rep, 'elsewhere/train.py') });
  assert.equal(one(other, 'optimizer').advice?.basis, 'estimate');
});

test('capabilities: a missing feature makes the site unavailable, with no proposal; unknown says "not checked"', async () => {
  const s = await scanner();
  const text = sample('gpt_tiny.py');
  const checked = s.scan(text, 'g.py', { capabilities: ALL, shapes: { batch: 8 } });
  for (const site of checked.sites.filter((x) => x.advice)) {
    assert.equal(site.advice?.unavailable, undefined);
    assert.doesNotMatch(site.message, /Not checked/);
  }
  // A torch known to take scale= lets the rewrite keep the block's own scale; unknown or absent, it does not.
  assert.deepEqual(one(checked, 'eager-attn').advice?.requires, ['sdpa', 'sdpa-scale']);
  assert.deepEqual(one(s.scan(text, 'g.py'), 'eager-attn').advice?.requires, ['sdpa']);
  const noScale = s.scan(text, 'g.py', { capabilities: { ...ALL, features: { ...ALL.features, 'sdpa-scale': false } } });
  assert.deepEqual(one(noScale, 'eager-attn').advice?.requires, ['sdpa']);
  assert.equal(one(noScale, 'eager-attn').advice?.unavailable, undefined);
  const old = s.scan(text, 'g.py', { capabilities: OLD, shapes: { batch: 8 } });
  const eager = one(old, 'eager-attn');
  assert.equal(eager.advice?.unavailable, 'the installed torch (1.13.0a0) has no F.scaled_dot_product_attention');
  assert.match(eager.message, /Fused attention is not available: the installed torch \(1\.13\.0a0\) has no F\.scaled_dot_product_attention\./);
  assert.doesNotMatch(eager.message, /computes the same|moot|would/);
  assert.doesNotMatch(formatHint(eager), /→/);
  assert.equal(siteSeverity(eager), 'hint');
  // Packing the attention dropout is then the lever that remains: its message does not point to fused attention.
  assert.doesNotMatch(kind(old, 'attn-dropout')[0]?.message ?? '', /Fused attention/);
  // The causal mask's fused alternative needs is_causal.
  const mask = kind(old, 'attn-mask').find((m) => m.advice?.lever === 'is-causal');
  assert.ok(mask, JSON.stringify(kind(old, 'attn-mask').map((m) => m.advice)));
  assert.match(mask.remedy ?? '', /^is_causal=True would remove it, but the installed torch \(1\.13\.0a0\) has no is_causal/);
  // No fused AdamW, but foreach: the proposal becomes foreach=True.
  const opt = one(old, 'optimizer');
  assert.deepEqual(opt.advice?.requires, ['adamw-foreach']);
  assert.equal(opt.advice.unavailable, undefined);
  assert.match(opt.message, /foreach=True runs the update/);
  // The levers this torch has are still proposed; without CUDA, autocast is proposed on the CPU.
  assert.equal(one(old, 'checkpoint').advice?.unavailable, undefined);
  const amp = one(old, 'no-autocast');
  assert.equal(amp.advice?.unavailable, undefined);
  assert.deepEqual(amp.advice?.requires, ['autocast-bf16-cpu']);
  assert.match(amp.message, /torch\.autocast\("cpu", dtype=torch\.bfloat16\)/);
  // Neither CUDA nor CPU bf16 autocast: the fp32 step is reported, with nothing proposed.
  const none = one(s.scan(text, 'g.py', { capabilities: { ...OLD, features: { ...OLD.features, 'autocast-bf16-cpu': false } } }), 'no-autocast');
  assert.match(none.advice?.unavailable ?? '', /has no bf16 autocast on CUDA$/);
  assert.equal(none.message, 'Training step in fp32: no autocast or other mixed precision in this file. Mixed precision is not available: the installed torch (1.13.0a0) has no bf16 autocast on CUDA.');
});

test('severity: Information for proposals that matter, Hint for what is not a proposal or under 1% of the measured peak', async () => {
  const s = await scanner();
  const r = s.scan(sample('gpt_tiny.py'), 'g.py', { shapes: { batch: 8 } });
  const eager = one(r, 'eager-attn');
  const saving = defined(eager.advice?.savingBytes, 'saving');
  assert.equal(siteSeverity(eager), 'information', 'no peak known: the proposal is shown');
  assert.equal(siteSeverity(eager, saving * 100), 'information', 'exactly 1% of the peak');
  assert.equal(siteSeverity(eager, saving * 100 + 100), 'hint', 'under 1% of the peak');
  assert.equal(siteSeverity(one(r, 'optimizer')), 'hint', 'fused/foreach saves time, not memory');
  for (const k of ['dropout', 'attn-dropout', 'attn-mask', 'ffn']) for (const site of kind(r, k)) assert.equal(siteSeverity(site, 1e15), 'information');
});

test('hovers explain lever, saving, basis, cost and requirement; CodeLens totals include the advisor savings', async () => {
  const s = await scanner();
  const r = s.scan(sample('gpt_tiny.py'), 'g.py', { shapes: { batch: 32, seqLen: 512 } });
  const hover = formatHover(one(r, 'eager-attn'));
  assert.match(hover, /^\*\*Membit · eager attention\*\* `membit\.eager-attn`/);
  assert.match(hover, /\| fused attention \(F\.scaled_dot_product_attention\) \| ≈1\.12 GiB @ B=32 H=4 L=512 \| estimate \| — \| sdpa \|/);
  assert.match(hover, /Found: scores \(line 54\) → mask \(line 55\) → softmax \(line 56\) → dropout \(line 57\) → @ v \(line 58\)\./);
  assert.match(hover, /Not checked against an installed torch/);
  assert.match(hover, /\[Documentation\]\(https:\/\/pytorch\.org\/docs\/stable\/generated\/torch\.nn\.functional\.scaled_dot_product_attention\.html\)/);
  const ckHover = formatHover(one(r, 'checkpoint'), ALL);
  assert.match(ckHover, /`for block in self\.h:` in `GPT\.forward`/);
  assert.match(ckHover, /\| activation checkpointing \| ≈1\.2 GiB @ B=32 H=4 L=512 \| estimate \| recompute: about one extra forward pass per step/);
  assert.doesNotMatch(ckHover, /Not checked/);
  const unavailable = formatHover(one(s.scan(sample('gpt_tiny.py'), 'g.py', { capabilities: OLD }), 'eager-attn'), OLD);
  assert.match(unavailable, /\*\*Not available with the installed torch:\*\* the installed torch \(1\.13\.0a0\) has no F\.scaled_dot_product_attention\./);

  const lenses = summarizeClasses(r);
  const attn = lenses.find((l) => l.className === 'CausalSelfAttention');
  assert.match(attn?.title ?? '', /^Membit: 1 dropout · 1 attn dropout · 2 attn mask · 1 eager attn — .*; fused attention saves ~1\.12 GiB$/);
  const gpt = lenses.find((l) => l.className === 'GPT');
  assert.match(gpt?.title ?? '', / · 1 checkpointable — .*checkpointing saves ~1\.2 GiB$/);
});

test('the incremental document gives the advisor the same findings as a fresh scan after edits', async () => {
  const s = await scanner();
  let text = fixture('advisor_train_style.py');
  const doc = s.open('inc.py', text);
  const key = (r: ScanResult) => JSON.stringify(r.sites.map((x) => [x.kind, x.range, x.message, x.advice, x.attention]));
  const edits: [string, string][] = [
    ['loss.backward()', 'loss.backward()\n        torch.autocast("cuda")'],
    ['        torch.autocast("cuda")', ''],
    ['opt = TorchAdamW(model.parameters(), lr=3e-4)', 'opt = TorchAdamW(model.parameters(), lr=3e-4, fused=True)'],
    ['import math\n', 'import math\nfrom torch.utils.checkpoint import checkpoint\n'],
    ['attn = sim.softmax(dim=-1)', 'attn = F.scaled_dot_product_attention(q, k, v)'],
  ];
  for (const [from, to] of edits) {
    assert.ok(text.includes(from), from);
    text = text.replace(from, to);
    assert.equal(key(doc.update(text)), key(s.scan(text, 'inc.py')), `after ${JSON.stringify(to)}`);
  }
  // Importing checkpoint is not using it: the block loop and the three HF models built are still findings.
  assert.equal(kind(doc.result, 'checkpoint').length, 4);
  // Calling it is.
  text = text.replace('            x = blk(x)', '            x = checkpoint(blk, x, use_reentrant=False)');
  assert.equal(key(doc.update(text)), key(s.scan(text, 'inc.py')));
  assert.equal(kind(doc.result, 'checkpoint').length, 0);
  doc.dispose();
});

test('parseCapabilities reads the module output and refuses anything else', () => {
  const good = parseCapabilities(`${JSON.stringify({ schema: 'membit.capabilities/1', torch: '2.1.0', features: { sdpa: true, 'adamw-fused': false, bogus: true, cuda: 'yes' } })}\n`);
  assert.deepEqual(good, { schema: 'membit.capabilities/1', torch: '2.1.0', features: { sdpa: true, 'adamw-fused': false } });
  assert.match(parseCapabilities('Traceback ...') as string, /^not JSON/);
  assert.match(parseCapabilities('{"schema":"other/1"}') as string, /unexpected schema/);
  assert.equal(parseCapabilities('{"schema":"membit.capabilities/1","torch":null,"features":{},"error":"cannot import torch in /usr/bin/python3: boom"}'), 'cannot import torch in /usr/bin/python3: boom');
});

test('probeCapabilities runs the real module with the real torch, and explains failures', async () => {
  const kernelsDir = join(repoRoot(), 'kernels');
  const real = await probeCapabilities(torchPython(), { kernelsDir, timeoutMs: 120_000 });
  assert.equal(real.error, undefined);
  const caps = defined(real.capabilities, 'capabilities');
  assert.equal(caps.schema, 'membit.capabilities/1');
  assert.match(caps.torch, /^\d+\.\d+/);
  assert.equal(Object.keys(caps.features).length, 10);
  for (const v of Object.values(caps.features)) assert.equal(typeof v, 'boolean');
  // Scanning with them: the advisor's findings are checked.
  const s = await scanner();
  const r = s.scan(sample('gpt_tiny.py'), 'g.py', { capabilities: caps });
  assert.doesNotMatch(one(r, 'eager-attn').message, /Not checked/);
  assert.equal(one(r, 'eager-attn').advice?.unavailable === undefined, caps.features.sdpa === true);

  const missing = await probeCapabilities('/nonexistent/python9', { kernelsDir });
  assert.deepEqual(missing, { error: '/nonexistent/python9 was not found' });
  // A Python that runs but has no membit package on its path (an empty kernels folder).
  const noPkg = await probeCapabilities(torchPython(), { kernelsDir: join(repoRoot(), 'test', 'fixtures', 'scan') , env: { PATH: process.env['PATH'] ?? '' } });
  assert.match(noPkg.error ?? '', /membit\.capabilities failed: .*No module named 'membit'/);
});

test('one hint per line: the biggest lever speaks first', async () => {
  const s = await scanner();
  const text = sample('bert_mlm.py');
  const r = s.scan(text, 'b.py');
  const built = lineOf(text, '_from_config(config, attn_implementation=attn)');
  // The checkpoint finding starts first on that line, the eager-attn one further right: eager attention is shown.
  assert.deepEqual(r.sites.filter((x) => x.range.startLine === built).map((x) => x.kind), ['checkpoint', 'eager-attn']);
  const hints = hintSites(r.sites);
  assert.equal(hints.filter((x) => x.range.startLine === built).map((x) => x.kind).join(), 'eager-attn');
  assert.equal(new Set(hints.map((x) => x.range.startLine)).size, hints.length);
  // With fused attention unavailable, the proposal that remains comes first.
  const old = hintSites(s.scan(text, 'b.py', { capabilities: OLD }).sites);
  assert.equal(old.filter((x) => x.range.startLine === built).map((x) => x.kind).join(), 'checkpoint');
});

test('membit scan --python checks the advice against that torch; a Python that cannot answer leaves it unchecked', async () => {
  const root = repoRoot();
  const io = capture(root);
  const python = relative(root, torchPython()) || torchPython();
  assert.equal(await main(['scan', 'samples/gpt_tiny.py', '--json', '--python', python], io), 0, io.stderr);
  const doc = JSON.parse(io.stdout) as ScanJson;
  const caps = doc.capabilities;
  assert.equal(caps?.schema, 'membit.capabilities/1');
  const eager = doc.sites.find((x) => x.kind === 'eager-attn');
  assert.ok(eager?.attention && eager.advice);
  assert.equal(eager.line, lineOf(sample('gpt_tiny.py'), 'att = F.softmax(att, dim=-1)') + 1);
  assert.deepEqual(eager.attention.softmaxLine, eager.line);
  assert.equal(eager.advice.lever, 'sdpa');
  assert.equal(eager.advice.unavailable, caps.features.sdpa ? null : eager.advice.unavailable);
  assert.equal(eager.severity, caps.features.sdpa ? 'information' : 'hint');
  assert.doesNotMatch(eager.message, /Not checked/);
  assert.equal(doc.summary.byKind['eager-attn'], 1);

  const bad = capture(root);
  assert.equal(await main(['scan', 'samples/gpt_tiny.py', '--python', '/nonexistent/python9'], bad), 0);
  assert.match(bad.stderr, /torch capabilities unknown \(\/nonexistent\/python9 was not found\); advice not checked against an installed torch/);
  assert.match(bad.stdout, /eager-attn .* eager attention: ~[\d.]+ \w+\/sample probs\+mask → fused SDPA/);
  const empty = capture(root);
  assert.equal(await main(['scan', 'samples/gpt_tiny.py', '--python', ''], empty), 2);
  assert.match(empty.stderr, /--python needs an interpreter/);
});

test('torch.compile in the file: dropout findings say packing is not proposed, with the measured figures; no conversion; re.compile is not compile', async () => {
  const s = await scanner();
  const body = [
    'import re',
    'import torch',
    'import torch.nn as nn',
    'import torch.nn.functional as F',
    '',
    'class Block(nn.Module):',
    '    def __init__(self):',
    '        super().__init__()',
    '        self.drop = nn.Dropout(0.1)',
    '',
    '    def forward(self, x):',
    '        return F.dropout(self.drop(x), 0.1, self.training)',
    '',
  ];
  const plain = s.scan([...body, "PAT = re.compile('x')", ''].join('\n'), 'plain.py');
  for (const site of plain.sites.filter((x) => x.kind === 'dropout' || x.kind === 'dropout-call')) {
    assert.equal(site.compiled, undefined);
    assert.doesNotMatch(site.message, /torch\.compile/);
  }
  for (const [tail, what] of [
    ['model = torch.compile(Block())', 'torch.compile(...)'],
    ['@torch.compile\ndef step(x):\n    return x', '@torch.compile'],
    ['@torch.compile(mode="max-autotune")\ndef step(x):\n    return x', 'torch.compile(...)'],
    ['model = Block()\nmodel.compile()', 'model.compile(...)'],
  ] as const) {
    const text = [...body, tail, ''].join('\n');
    const r = s.scan(text, 'compiled.py');
    const drops = r.sites.filter((x) => x.kind === 'dropout' || x.kind === 'dropout-call');
    assert.equal(drops.length, 2, tail);
    for (const site of drops) {
      assert.deepEqual(site.compiled, { what, line: body.length + (tail.startsWith('model = Block()') ? 1 : 0) }, tail);
      // The figures are the committed results' own (advice/measured.ts reads them): each
      // model's packed and recompute step time against its stock compiled run.
      const figures = COMPILED_DROPOUT.map((m) => signedPercent(m.packed.step));
      assert.equal(figures.length, 2);
      assert.match(site.message, /^.*Compiled \(torch\.compile\): packing is not proposed here\./);
      for (const f of figures) assert.ok(site.message.includes(f), `${f} in ${site.message}`);
      const hover = formatHover(site, ALL);
      assert.match(hover, new RegExp(`\\(\`${what.replace(/[.*()[\]]/g, '\\$&')}\` at line ${body.length + 1 + (tail.startsWith('model = Block()') ? 1 : 0)}\\)`));
      for (const m of COMPILED_DROPOUT) assert.ok(hover.includes(`packed ${signedPercent(m.packed.step)} step, ${signedPercent(m.packed.peak)} peak`), hover);
      assert.doesNotMatch(hover, /Quick fix/);
      const conv = convertDropout(text, [site]);
      assert.equal(conv.converted.length, 0);
      const skip = defined(conv.skipped[0], 'the skipped site');
      assert.equal(skip.code, 'compiled');
      assert.match(skip.reason, /calls torch\.compile, where packing did not hold step time/);
    }
  }
  // The same dropouts without torch.compile convert.
  const conv = convertDropout(body.join('\n'), plain.sites.filter((x) => x.kind === 'dropout' || x.kind === 'dropout-call'));
  assert.equal(conv.converted.length, 2);
});

test('compiled-dropout figures are read from the committed compile results, against their stock rows', () => {
  for (const m of COMPILED_DROPOUT) {
    const run = JSON.parse(readFileSync(join(repoRoot(), m.source), 'utf8')) as { runs: { model: string; variant: string; compiled: boolean; step_ms_median: number; peak_allocated: number }[] };
    const row = (v: string) => defined(run.runs.find((r) => r.variant === v && r.compiled && r.model === m.key), `${m.key} ${v}`);
    const stock = row('stock');
    const packed = row('packed');
    assert.equal(m.packed.step, (100 * (packed.step_ms_median - stock.step_ms_median)) / stock.step_ms_median);
    assert.equal(m.packed.peak, (100 * (packed.peak_allocated - stock.peak_allocated)) / stock.peak_allocated);
  }
  assert.equal(signedPercent(-7.44), '−7.4%');
  assert.equal(signedPercent(1.94), '+1.9%');
  // Zero reads as the project's other relative changes do (units.ts, formatPercentChange).
  assert.equal(signedPercent(0), '±0.0%');
});
