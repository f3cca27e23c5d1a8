/**
 * `membit convert --lever` on temporary folders: diffs that git applies to exactly
 * what a write produces, skips with reasons, the same refusals as the dropout
 * conversions (conflicts, non-UTF-8, files changed while converting), BOM and CRLF
 * kept, usage errors.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { convertFile } from '../../src/core/cli/convert';
import { main } from '../../src/core/cli/main';
import { capture } from './cliCapture';
import { repoRoot } from './scanSupport';

const GPT = () => readFileSync(join(repoRoot(), 'samples', 'gpt_tiny.py'), 'utf8');
const HF = 'from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM.from_pretrained("gpt2", attn_implementation=impl)\n';

function workspace(): string {
  const dir = mkdtempSync(join(tmpdir(), 'membit-lever-'));
  writeFileSync(join(dir, 'gpt.py'), GPT());
  writeFileSync(join(dir, 'hf.py'), HF);
  // A BOM and CRLF line breaks survive a rewrite.
  writeFileSync(join(dir, 'crlf.py'), `\uFEFF${GPT().replace(/\n/g, '\r\n')}`);
  return dir;
}

const read = (dir: string, f: string) => readFileSync(join(dir, f), 'utf8');

test('--lever sdpa --diff: a patch git applies to exactly what a write produces; skips say why', async () => {
  const dir = workspace();
  const copy = mkdtempSync(join(tmpdir(), 'membit-lever-copy-'));
  try {
    const io = capture(dir);
    assert.equal(await main(['convert', '.', '--lever', 'sdpa', '--diff'], io), 0, io.stderr);
    assert.equal(read(dir, 'gpt.py'), GPT(), '--diff wrote a file');
    assert.match(io.stdout, /^--- a\/crlf\.py\n\+\+\+ b\/crlf\.py\n@@ /m);
    assert.match(io.stdout, /^\+ {8}y = F\.scaled_dot_product_attention\(q, k, v, attn_mask=None, dropout_p=self\.attn_dropout\.p if self\.training else 0\.0, is_causal=True\)$/m);
    assert.match(io.stdout, /^- {8}att = F\.softmax\(att, dim=-1\)$/m);
    assert.match(io.stderr, /gpt\.py:56: would rewrite eager attention \(lines 54-58\)/);
    assert.match(io.stderr, /hf\.py:3: skipped: `attn_implementation=impl` in `AutoModelForCausalLM\.from_pretrained\(\.\.\.\)` is not a string literal/);
    assert.match(io.stderr, /2 sdpa rewrites to apply in 2 files, 1 site skipped \(nothing written\)/);

    cpSync(dir, copy, { recursive: true });
    writeFileSync(join(copy, 'p.diff'), io.stdout);
    const applied = spawnSync('git', ['apply', '--whitespace=nowarn', 'p.diff'], { cwd: copy, encoding: 'utf8' });
    assert.equal(applied.status, 0, applied.stderr);
    const w = capture(dir);
    assert.equal(await main(['convert', '.', '--lever', 'sdpa'], w), 0, w.stderr);
    assert.match(w.stdout, /gpt\.py:56: rewrote eager attention/);
    for (const f of ['gpt.py', 'crlf.py', 'hf.py']) assert.equal(read(copy, f), read(dir, f), f);
    const crlf = readFileSync(join(dir, 'crlf.py'), 'utf8');
    assert.ok(crlf.startsWith('\uFEFF"""'), 'the BOM was lost');
    assert.ok(!/[^\r]\n/.test(crlf), 'a bare LF in a CRLF file');

    const again = capture(dir);
    assert.equal(await main(['convert', '.', '--lever', 'sdpa'], again), 0);
    assert.match(again.stdout, /0 sdpa rewrites applied in 0 files, 1 site skipped/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(copy, { recursive: true, force: true });
  }
});

test('--lever checkpoint and autocast write their rewrites and list the added import', async () => {
  const dir = workspace();
  try {
    const ck = capture(dir);
    assert.equal(await main(['convert', 'gpt.py', '--lever', 'checkpoint'], ck), 0, ck.stderr);
    assert.match(ck.stdout, /gpt\.py:104: rewrote each block of `self\.h` checkpointed while training/);
    assert.match(ck.stdout, /gpt\.py: added `import torch\.utils\.checkpoint`/);
    assert.match(read(dir, 'gpt.py'), /x = torch\.utils\.checkpoint\.checkpoint\(block, x, use_reentrant=False\)/);
    const ac = capture(dir);
    assert.equal(await main(['convert', 'crlf.py', '--lever', 'autocast', '--dry-run'], ac), 0, ac.stderr);
    // Lines of the sample's training loop (1-based): the rewrite is reported at backward().
    const lines = read(dir, 'crlf.py').split(/\r?\n/);
    const fwd = lines.findIndex((l) => l.trim() === '_, loss = model(x, y)') + 1;
    const bwd = lines.findIndex((l) => l.trim() === 'loss.backward()') + 1;
    assert.ok(fwd > 0 && bwd > fwd);
    assert.ok(ac.stdout.includes(`crlf.py:${bwd}: would rewrite forward and loss (line ${fwd}) under torch.autocast(bf16)`), ac.stdout);
    assert.match(ac.stdout, /1 autocast rewrite to apply in 1 file \(nothing written\)/);
    assert.doesNotMatch(read(dir, 'crlf.py'), /autocast/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--lever refuses conflicted and non-UTF-8 files and files changed while converting, like the other conversions', async () => {
  const dir = workspace();
  try {
    const conflict = `<<<<<<< HEAD\n${GPT()}=======\n>>>>>>> other\n`;
    writeFileSync(join(dir, 'conflict.py'), conflict);
    const latin = Buffer.concat([Buffer.from('# caf\xe9\n', 'latin1'), Buffer.from(GPT())]);
    writeFileSync(join(dir, 'latin1.py'), latin);
    const io = capture(dir);
    assert.equal(await main(['convert', '.', '--lever', 'sdpa'], io), 1);
    assert.match(io.stdout, /conflict\.py: refused: has git conflict markers/);
    assert.match(io.stdout, /latin1\.py: refused: not valid UTF-8/);
    assert.equal(read(dir, 'conflict.py'), conflict);
    assert.ok(readFileSync(join(dir, 'latin1.py')).equals(latin));
    assert.match(read(dir, 'gpt.py'), /scaled_dot_product_attention/);

    const file = join(dir, 'fresh.py');
    writeFileSync(file, GPT());
    const edited = `${GPT()}# saved by an editor meanwhile\n`;
    const r = await convertFile(file, 'fresh.py', { kind: 'lever', lever: 'checkpoint' }, undefined, true, {
      beforeWrite: (abs) => {
        writeFileSync(abs, edited);
        utimesSync(abs, new Date(), new Date(Date.now() + 5000));
      },
    });
    assert.equal(r.status, 'refused');
    assert.match(r.message ?? '', /changed on disk/);
    assert.equal(read(dir, 'fresh.py'), edited);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--lever usage errors exit 2', async () => {
  const dir = workspace();
  try {
    for (const argv of [
      ['convert', 'gpt.py', '--lever', 'fused'],
      ['convert', 'gpt.py', '--lever', 'sdpa', '--dropout', 'packed'],
      ['convert', 'gpt.py', '--lever', 'sdpa', '--revert'],
      ['convert', 'gpt.py', '--lever', 'sdpa', '--ffn', '2:4'],
      ['convert', 'gpt.py', '--lever'],
      ['convert', 'gpt.py', '--lever', 'checkpoint', '--sdpa-scale'],
      ['convert', 'gpt.py', '--sdpa-scale'],
    ]) {
      const io = capture(dir);
      assert.equal(await main(argv, io), 2, argv.join(' '));
      assert.match(io.stderr, /Usage: membit convert/);
    }
    const help = capture(dir);
    assert.equal(await main(['convert', '--help'], help), 0);
    assert.match(help.stdout, /--lever LEVER/);
    assert.match(help.stdout, /--sdpa-scale/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--sdpa-scale lets a non-default scale through as scale=; without it the chain is skipped with the reason', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-lever-scale-'));
  try {
    writeFileSync(join(dir, 'vit.py'), readFileSync(join(repoRoot(), 'samples', 'vit_digits.py'), 'utf8'));
    const plain = capture(dir);
    assert.equal(await main(['convert', 'vit.py', '--lever', 'sdpa', '--dry-run'], plain), 0);
    assert.match(plain.stdout, /vit\.py:50: skipped: the scores are scaled by `self\.scale`.*needs `scale=self\.scale`/);
    const io = capture(dir);
    assert.equal(await main(['convert', 'vit.py', '--lever', 'sdpa', '--sdpa-scale'], io), 0, io.stderr);
    assert.match(read(dir, 'vit.py'), /^ {8}x = \(F\.scaled_dot_product_attention\(q, k, v, attn_mask=None, dropout_p=self\.attn_drop\.p if self\.training else 0\.0, is_causal=False, scale=self\.scale\)\)\.transpose\(1, 2\)\.reshape\(B, N, C\)$/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--revert undoes every lever, alone or after a conversion, byte for byte (BOM and CRLF kept)', async () => {
  const dir = workspace();
  try {
    const before = ['gpt.py', 'crlf.py', 'hf.py'].map((f) => read(dir, f));
    for (const argv of [
      ['convert', '.', '--lever', 'sdpa'],
      ['convert', '.', '--lever', 'checkpoint'],
      ['convert', '.', '--lever', 'autocast'],
      ['convert', '.', '--dropout', 'packed'],
    ]) {
      const io = capture(dir);
      assert.equal(await main(argv, io), 0, `${argv.join(' ')}: ${io.stderr}`);
    }
    assert.notEqual(read(dir, 'gpt.py'), before[0]);
    assert.match(read(dir, 'gpt.py'), /# membit: sdpa rewrote the 1 line above; `membit convert --revert` restores the 5 below/);
    const io = capture(dir);
    assert.equal(await main(['convert', '.', '--revert'], io), 0, io.stderr);
    assert.match(io.stdout, /gpt\.py:\d+: reverted sdpa rewrite -> the 5 original lines/);
    assert.match(io.stdout, /gpt\.py:\d+: reverted checkpoint rewrite/);
    assert.deepEqual(['gpt.py', 'crlf.py', 'hf.py'].map((f) => read(dir, f)), before);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--lever checkpoint leaves an HF model that is only read from (its weights copied), and says why', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-lever-'));
  try {
    const copyOnly = [
      'from transformers import GPT2LMHeadModel',
      '',
      'def load(model):',
      '    model_hf = GPT2LMHeadModel.from_pretrained("gpt2")',
      '    sd_hf = model_hf.state_dict()',
      '    for k in sd_hf:',
      '        model.state_dict()[k].copy_(sd_hf[k])',
      '    return model',
      '',
      'def train():',
      '    model = GPT2LMHeadModel.from_pretrained("gpt2")',
      '    model.train()',
      '    return model',
      '',
    ].join('\n');
    writeFileSync(join(dir, 'load.py'), copyOnly);
    const io = capture(dir);
    assert.equal(await main(['convert', 'load.py', '--lever', 'checkpoint', '--dry-run'], io), 0, io.stderr);
    assert.match(io.stdout, /load\.py:4: skipped: the GPT2LMHeadModel is built only to read from \(`model_hf\.state_dict`\), not trained here/);
    assert.match(io.stdout, /load\.py:11: would rewrite model\.gradient_checkpointing_enable\(\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
