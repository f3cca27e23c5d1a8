/**
 * The advisor's rewrites (applyLever): the exact text they write on the GPT sample and
 * the nanoGPT fixture, each pattern variant they accept, every reason they refuse,
 * CRLF files, idempotence, edits that reproduce the text, and a fuzz run that must
 * never throw.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { rng } from './fuzzInputs';
import { adviceMarkdown, applyEdits, applyLever, type Lever, type LeverResult, LEVERS, leversAt, revertAll } from '../../src/core/rewrite';
import { FIXTURES, fixture, repoRoot } from './scanSupport';
import { itemAt } from '../../src/core/arrays';

function sample(name: string): string {
  return readFileSync(join(repoRoot(), 'samples', name), 'utf8');
}

/** The rewritten text without the comment records that --revert reads (leverRecord.ts). */
function plain(text: string): string {
  return text.replace(/^[ \t]*# membit: (sdpa|checkpoint|autocast) rewrote the \d+ lines? above; .*\r?\n(?:[ \t]*#\|.*\r?\n?)*/gm, '');
}

/**
 * Applies a lever and checks the invariants every result must keep, including that
 * --revert gives the input back byte for byte. `text` is returned without the records;
 * `raw` is what the file holds.
 */
async function lever(text: string, l: Lever, opts: { line?: number; scaleKwarg?: boolean } = {}): Promise<LeverResult & { raw: string }> {
  const r = await applyLever(text, l, opts);
  assert.equal(applyEdits(text, r.edits), r.text, 'the edits do not reproduce the text');
  assert.equal(r.applied, r.changes.length);
  assert.equal(r.applied === 0, r.text === text);
  assert.ok(!r.skipped.some((s) => s.code === 'internal-error'), JSON.stringify(r.skipped));
  const back = revertAll(r.text);
  assert.equal(applyEdits(r.text, back.edits), text, 'revert does not give the input back');
  return { ...r, raw: r.text, text: plain(r.text) };
}

/** `text` with each [from, to] replaced exactly once (and present). */
function replaced(text: string, ...pairs: [string, string][]): string {
  let out = text;
  for (const [from, to] of pairs) {
    assert.equal(out.split(from).length, 2, `expected exactly one ${JSON.stringify(from)}`);
    out = out.replace(from, () => to);
  }
  return out;
}

const GPT_CHAIN = `        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = att @ v
`;
const GPT_SDPA = '        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=self.attn_dropout.p if self.training else 0.0, is_causal=True)\n';

test('sdpa on the GPT sample: the eager chain becomes one SDPA call, the causal buffer stays registered', async () => {
  const src = sample('gpt_tiny.py');
  const r = await lever(src, 'sdpa');
  assert.equal(r.text, replaced(src, [GPT_CHAIN, GPT_SDPA]));
  assert.equal(r.applied, 1);
  assert.deepEqual(r.skipped, []);
  assert.deepEqual(r.imports, []);
  const softmax = src.split('\n').findIndex((l) => l.includes('att = F.softmax(att, dim=-1)'));
  assert.equal(r.changes[0]?.line, softmax);
  assert.equal(r.changes[0].form, 'sdpa-chain');
  assert.match(r.text, /self\.register_buffer\(\n\s+"bias",/);
});

test('checkpoint on the GPT sample: the block loop recomputes in training, import added after the torch imports', async () => {
  const src = sample('gpt_tiny.py');
  const r = await lever(src, 'checkpoint');
  assert.equal(
    r.text,
    replaced(
      src,
      ['from torch.nn import functional as F\n', 'from torch.nn import functional as F\nimport torch.utils.checkpoint\n'],
      [
        '        for block in self.h:\n            x = block(x)\n',
        '        for block in self.h:\n' +
          '            if self.training and torch.is_grad_enabled():\n' +
          '                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)\n' +
          '            else:\n' +
          '                x = block(x)\n',
      ],
    ),
  );
  assert.deepEqual(r.imports, ['import torch.utils.checkpoint']);
});

test('autocast on the GPT sample: only the forward/loss statement goes under bf16 autocast', async () => {
  const src = sample('gpt_tiny.py');
  const r = await lever(src, 'autocast');
  assert.equal(
    r.text,
    replaced(src, [
      '        _, loss = model(x, y)\n',
      '        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):\n            _, loss = model(x, y)\n',
    ]),
  );
  const backward = src.split('\n').findIndex((l) => l.trim() === 'loss.backward()');
  assert.equal(r.changes[0]?.line, backward);
});

test('the nanoGPT fixture: the chain in the else branch of `if self.flash:` is the fallback and stays; the loop over transformer.h converts', async () => {
  const src = fixture('nanogpt_style.py');
  const s = await lever(src, 'sdpa');
  assert.equal(s.applied, 0);
  assert.equal(s.skipped[0]?.code, 'fallback-branch');
  assert.match(s.skipped[0].reason, /`else:` of `if self.flash:`/);
  // The same model without the fused path (minGPT style) converts.
  const eager = fixture('mingpt_style.py');
  const e = await lever(eager, 'sdpa');
  assert.equal(e.applied, 1);
  assert.equal(
    e.text,
    replaced(eager, [
      `        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))  # expect: attn-mask
        att = F.softmax(att, dim=-1)  # expect: eager-attn
        att = self.attn_dropout(att)
        y = att @ v
`,
      // A comment of a replaced statement is kept, on its own line.
      `        # expect: attn-mask
        # expect: eager-attn
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=self.attn_dropout.p if self.training else 0.0, is_causal=True)
`,
    ]),
  );
  // `if not self.flash:` guards a fallback too.
  const guarded = await lever(eager.replace('        att = (q @ k', '        if not self.flash:\n            pass\n        att = (q @ k'), 'sdpa');
  assert.equal(guarded.applied, 1, 'a sibling `if not self.flash:` block does not make the chain after it a fallback');
  const c = await lever(src, 'checkpoint');
  assert.equal(c.applied, 1);
  assert.match(c.text, /for block in self\.transformer\.h:.*\n {12}if self\.training and torch\.is_grad_enabled\(\):\n {16}x = torch\.utils\.checkpoint\.checkpoint\(block, x, use_reentrant=False\)\n {12}else:\n {16}x = block\(x\)\n/);
});

/** A module with one attention function; `body` replaces the chain. */
function attention(body: string, init = '', header = 'import math\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n'): string {
  return `${header}

class Attn(nn.Module):
    def __init__(self, n, d, p):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.drop = nn.Dropout(p)
        self.register_buffer("mask", torch.tril(torch.ones(n, n)).view(1, 1, n, n))
${init}
    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, 1, C).transpose(1, 2)
        k = k.view(B, T, 1, C).transpose(1, 2)
        v = v.view(B, T, 1, C).transpose(1, 2)
${body}
        return y.transpose(1, 2).reshape(B, T, C)
`;
}

const CHAIN = `        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = self.drop(att)
        y = att @ v`;

function sdpaLine(r: LeverResult): string | undefined {
  return r.text.split('\n').find((l) => l.includes('(q, k, v, attn_mask='))?.trim();
}

test('sdpa accepts the equivalent spellings of each step', async () => {
  const variants: [string, string][] = [
    ['/ math.sqrt', CHAIN.replace('* (1.0 / math.sqrt(k.size(-1)))', '/ math.sqrt(k.size(-1))')],
    ['** -0.5 on q', CHAIN.replace('* (1.0 / math.sqrt(k.size(-1)))', '* q.size(-1) ** -0.5')],
    ['shape[-1]', CHAIN.replace('(1.0 / math.sqrt(k.size(-1)))', '(1 / math.sqrt(k.shape[-1]))')],
    ['torch.matmul and mT', CHAIN.replace('(q @ k.transpose(-2, -1))', 'torch.matmul(q, k.mT)').replace('y = att @ v', 'y = torch.matmul(att, v)')],
    ['transpose(-1, -2)', CHAIN.replace('transpose(-2, -1)', 'transpose(-1, -2)')],
    ['-float("inf")', CHAIN.replace('float("-inf")', "-float('inf')")],
    ['-math.inf', CHAIN.replace('float("-inf")', '-math.inf')],
    ['torch.softmax', CHAIN.replace('F.softmax(att, dim=-1)', 'torch.softmax(att, -1)')],
    ['method softmax', CHAIN.replace('F.softmax(att, dim=-1)', 'att.softmax(dim=-1)')],
    ['scale on its own line', CHAIN.replace(' * (1.0 / math.sqrt(k.size(-1)))', '\n        att = att / math.sqrt(k.size(-1))')],
  ];
  for (const [what, body] of variants) {
    const r = await lever(attention(body), 'sdpa');
    assert.equal(r.applied, 1, `${what}: ${JSON.stringify(r.skipped)}`);
    assert.equal(
      sdpaLine(r),
      'y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=self.drop.p if self.training else 0.0, is_causal=True)',
      what,
    );
  }
});

test('sdpa: no mask gives is_causal=False, no dropout gives dropout_p=0.0, F.dropout keeps its training flag', async () => {
  const noMask = await lever(attention(CHAIN.replace(/ {8}att = att\.masked_fill.*\n/, '')), 'sdpa');
  assert.match(sdpaLine(noMask) ?? '', /dropout_p=self\.drop\.p if self\.training else 0\.0, is_causal=False\)$/);
  const noDrop = await lever(attention(CHAIN.replace(/ {8}att = self\.drop\(att\)\n/, '')), 'sdpa');
  assert.match(sdpaLine(noDrop) ?? '', /dropout_p=0\.0, is_causal=True\)$/);
  const fdrop = await lever(attention(CHAIN.replace('self.drop(att)', 'F.dropout(att, p=0.1, training=self.training)')), 'sdpa');
  assert.match(sdpaLine(fdrop) ?? '', /dropout_p=0\.1 if self\.training else 0\.0, is_causal=True\)$/);
});

test('sdpa: the output may sit inside a larger expression; a 2-D buffer sliced [:T, :T] is causal too', async () => {
  const inner = await lever(attention(CHAIN.replace('y = att @ v', 'y = (att @ v).contiguous()')), 'sdpa');
  assert.match(sdpaLine(inner) ?? '', /^y = \(F\.scaled_dot_product_attention\(q, k, v, .*is_causal=True\)\)\.contiguous\(\)$/);
  const twoD = attention(CHAIN.replace('self.mask[:, :, :T, :T]', 'self.mask[:T, :T]')).replace('torch.tril(torch.ones(n, n)).view(1, 1, n, n)', 'torch.tril(torch.ones(n, n))');
  assert.equal((await lever(twoD, 'sdpa')).applied, 1);
});

test('sdpa spells torch.nn.functional as the file does, and imports it only when nothing binds it', async () => {
  const viaTorch = await lever(attention(CHAIN.replace('F.softmax', 'torch.softmax'), '', 'import math\nimport torch\nimport torch.nn\nnn = torch.nn\n'), 'sdpa');
  assert.match(sdpaLine(viaTorch) ?? '', /^y = torch\.nn\.functional\.scaled_dot_product_attention\(/);
  const viaNnModule = await lever(attention(CHAIN.replace('F.softmax', 'torch.softmax'), '', 'import math\nimport torch\nfrom torch import nn\n'), 'sdpa');
  assert.match(sdpaLine(viaNnModule) ?? '', /^y = nn\.functional\.scaled_dot_product_attention\(/);
  assert.deepEqual(viaTorch.imports, []);
  // A bare import of the function is the file's spelling.
  const bare = await lever(attention(CHAIN.replace('F.softmax', 'softmax'), '', 'import math\nimport torch\nimport torch.nn as nn\nfrom torch.nn.functional import softmax, scaled_dot_product_attention as sdpa\n'), 'sdpa');
  assert.match(sdpaLine(bare) ?? '', /^y = sdpa\(q, k, v, attn_mask=None, /);
  assert.deepEqual(bare.imports, []);
});

test('sdpa adds `import torch.nn.functional as F` after the torch imports when the file has no F', async () => {
  const src = attention(CHAIN.replace('F.softmax(att, dim=-1)', 'att.softmax(-1)'), '', 'import math\nimport torch\nfrom torch import nn\nimport os\n');
  const r = await lever(src, 'sdpa');
  assert.match(sdpaLine(r) ?? '', /^y = nn\.functional\.scaled_dot_product_attention/);
  assert.deepEqual(r.imports, []);
  const noTorch = await lever(src.replace('import torch\n', '').replace(/torch\.(tril|ones)/g, 'nn.init.$1'), 'sdpa');
  assert.equal(noTorch.applied, 0);
  const plain = `import math


def attend(q, k, v):
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    att = att.softmax(dim=-1)
    y = att @ v
    return y
`;
  const p = await lever(plain, 'sdpa');
  assert.equal(p.applied, 1);
  assert.deepEqual(p.imports, ['import torch.nn.functional as F']);
  assert.equal(
    p.text,
    'import math\nimport torch.nn.functional as F\n\n\ndef attend(q, k, v):\n    y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)\n    return y\n',
  );
});

test('sdpa: a non-default scale needs scale= and is written only when allowed', async () => {
  const body = CHAIN.replace('(1.0 / math.sqrt(k.size(-1)))', 'self.scale');
  const src = attention(body, '        self.scale = 0.125\n');
  const off = await lever(src, 'sdpa');
  assert.equal(off.applied, 0);
  assert.equal(off.skipped[0]?.code, 'scale');
  assert.match(itemAt(off.skipped, 0).reason, /scaled by `self\.scale`.*needs `scale=self\.scale` \(torch >= 2\.1\)/);
  const on = await lever(src, 'sdpa', { scaleKwarg: true });
  assert.match(sdpaLine(on) ?? '', /is_causal=True, scale=self\.scale\)$/);
  // Unscaled scores (q scaled earlier, as timm does) need scale=1.0.
  const timm = await lever(attention(CHAIN.replace(' * (1.0 / math.sqrt(k.size(-1)))', '')), 'sdpa', { scaleKwarg: true });
  assert.match(sdpaLine(timm) ?? '', /scale=1\.0\)$/);
  const div = await lever(attention(CHAIN.replace('* (1.0 / math.sqrt(k.size(-1)))', '/ 8.0')), 'sdpa', { scaleKwarg: true });
  assert.match(sdpaLine(div) ?? '', /scale=1\.0 \/ 8\.0\)$/);
});

/** The one skip of a variant, after checking nothing was edited. */
async function skipOf(src: string, opts: { line?: number } = {}): Promise<{ code: string; reason: string }> {
  const r = await lever(src, 'sdpa', opts);
  assert.equal(r.applied, 0, `expected a skip, got ${r.changes.map((c) => c.description).join('; ')}`);
  assert.equal(r.skipped.length, 1, JSON.stringify(r.skipped));
  return r.skipped[0] as { code: string; reason: string };
}

test('sdpa skips every variant it cannot prove, with the reason', async () => {
  const cases: [string, string, string, RegExp][] = [
    ['an op between the steps', CHAIN.replace('        att = F.softmax', '        att = att + 1\n        att = F.softmax'), 'extra-statement', /`att = att \+ 1` \(line \d+\) sits between the attention scores and the softmax/],
    ['weights returned', CHAIN, 'weights-used', /`att` is used again at line \d+ \(`return y, att`\)/],
    ['weights used later', `${CHAIN}\n        self.last = att`, 'weights-used', /`att` is used again at line \d+ \(`self\.last = att`\)/],
    ['triu mask', CHAIN, 'mask-not-causal', /`self\.mask` \(line \d+\) is not provably torch\.tril/],
    ['mask filled with 0', CHAIN.replace('float("-inf")', '0.0'), 'mask-not-causal', /filled with `0\.0`, not -inf/],
    ['mask not sliced', CHAIN.replace('self.mask[:, :, :T, :T]', 'self.mask'), 'mask-not-causal', /is not `self\.<buffer>\[:, :, :T, :T\] == 0`/],
    ['slice lengths differ', CHAIN.replace(':T, :T]', ':T, :S]'), 'mask-not-causal', /is not `self\.<buffer>/],
    ['softmax over dim 1', CHAIN.replace('dim=-1', 'dim=1'), 'softmax-form', /over dim `1`, not the last one/],
    ['softmax with dtype', CHAIN.replace('dim=-1)', 'dim=-1, dtype=torch.float32)'), 'softmax-form', /passes `dtype=`/],
    ['a module that is not Dropout', CHAIN.replace('self.drop(att)', 'self.qkv(att)'), 'dropout-form', /`self\.qkv` is not provably an nn\.Dropout/],
    ['v is not a name', CHAIN.replace('att @ v', 'att @ v.float()'), 'value-form', /is not `y = att @ v` with a plain v/],
    ['scores not q @ kT', CHAIN.replace('k.transpose(-2, -1)', 'k'), 'scores-form', /are not `q @ k\.transpose\(-2, -1\)`/],
  ];
  for (const [what, body, code, reason] of cases) {
    let src = attention(body);
    if (what === 'weights returned') src = src.replace('return y.transpose(1, 2).reshape(B, T, C)', 'return y, att');
    if (what === 'triu mask') src = src.replace('torch.tril(', 'torch.triu(');
    const s = await skipOf(src);
    assert.equal(s.code, code, `${what}: ${s.reason}`);
    assert.match(s.reason, reason, what);
  }
});

test('sdpa skips a causal mask whose query and key lengths may differ (a KV cache)', async () => {
  const withCache = attention(CHAIN).replace('def forward(self, x):', 'def forward(self, x, past_kv=None):');
  assert.equal((await skipOf(withCache)).code, 'kv-cache');
  const concatenated = attention(CHAIN).replace('        v = v.view', '        k = torch.cat([self.k_cache, k], dim=2)\n        v = v.view');
  const s = await skipOf(concatenated);
  assert.equal(s.code, 'kv-cache');
  assert.match(s.reason, /may extend the keys from a cache/);
  // Without a mask the lengths do not matter: it converts.
  assert.equal((await lever(concatenated.replace(/ {8}att = att\.masked_fill.*\n/, ''), 'sdpa')).applied, 1);
  // Keys from another input (cross-attention): their length is not the query's.
  const cross = attention(CHAIN).replace('def forward(self, x):', 'def forward(self, x, enc):').replace('        k = k.view(B, T, 1, C)', '        k = self.qkv(enc).split(C, dim=2)[1].view(B, T, 1, C)');
  const c = await skipOf(cross);
  assert.equal(c.code, 'kv-cache');
  assert.match(c.reason, /`q` comes from `x` and `k` from `enc`, `x`: their lengths can differ/);
});

test('sdpa skips a buffer registered twice or assigned elsewhere in the class', async () => {
  const twice = attention(CHAIN, '        self.register_buffer("mask", torch.ones(4, 4))\n');
  assert.match((await skipOf(twice)).reason, /not registered exactly once in this class/);
  const assigned = attention(CHAIN, '        self.mask = torch.zeros(3)\n');
  assert.equal((await skipOf(assigned)).code, 'mask-not-causal');
});

test('HF: attn_implementation="eager" becomes "sdpa" in model and config constructors; quotes kept', async () => {
  const src = `import transformers
from transformers import AutoModelForCausalLM, BertConfig, BertForMaskedLM

model = AutoModelForCausalLM.from_pretrained("gpt2", attn_implementation="eager")
config = BertConfig(hidden_size=128, attn_implementation='eager')
bert = BertForMaskedLM._from_config(config, attn_implementation="eager").to("cpu")
other = transformers.AutoModel.from_config(config, attn_implementation="flash_attention_2")
config._attn_implementation = "eager"
`;
  const r = await lever(src, 'sdpa');
  assert.equal(r.applied, 4);
  assert.equal(r.text, src.replace(/"eager"/g, '"sdpa"').replace("'eager'", "'sdpa'"));
  assert.ok(r.changes.every((c) => c.form === 'hf-sdpa'));
  assert.equal((await lever(r.text, 'sdpa')).applied, 0);
});

test('HF: a non-literal value, another callee and output_attentions=True are skipped with reasons', async () => {
  const nonLiteral = await lever('from transformers import BertForMaskedLM\nm = BertForMaskedLM._from_config(cfg, attn_implementation=attn)\n', 'sdpa');
  assert.equal(nonLiteral.skipped[0]?.code, 'not-literal');
  assert.match(itemAt(nonLiteral.skipped, 0).reason, /`attn_implementation=attn` in `BertForMaskedLM\._from_config\(\.\.\.\)` is not a string literal/);
  const attr = await lever('cfg._attn_implementation = choice\n', 'sdpa');
  assert.equal(attr.skipped[0]?.code, 'not-literal');
  const other = await lever('kwargs = dict(attn_implementation="eager")\n', 'sdpa');
  assert.equal(other.skipped[0]?.code, 'unknown-callee');
  const weights = await lever('from transformers import AutoModel\nm = AutoModel.from_pretrained("x", attn_implementation="eager")\nout = m(ids, output_attentions=True)\n', 'sdpa');
  assert.equal(weights.skipped[0]?.code, 'attention-weights');
  assert.equal(weights.applied, 0);
});

const LOOP = `import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    def forward(self, x, mask=None):
        for blk in self.blocks:
            x = blk(x)
        return x
`;

test('checkpoint keeps the file\'s spelling of checkpoint and passes extra block arguments through', async () => {
  const bare = await lever(LOOP.replace('import torch\n', 'import torch\nfrom torch.utils.checkpoint import checkpoint\n'), 'checkpoint');
  assert.match(bare.text, /x = checkpoint\(blk, x, use_reentrant=False\)/);
  assert.deepEqual(bare.imports, []);
  const alias = await lever(LOOP.replace('import torch\n', 'import torch\nimport torch.utils.checkpoint as cp\n'), 'checkpoint');
  assert.match(alias.text, /x = cp\.checkpoint\(blk, x, use_reentrant=False\)/);
  const args = await lever(LOOP.replace('x = blk(x)', 'x = blk(x, mask, scale=2.0,)'), 'checkpoint');
  assert.match(args.text, /x = torch\.utils\.checkpoint\.checkpoint\(blk, x, mask, scale=2\.0, use_reentrant=False\)\n {12}else:\n {16}x = blk\(x, mask, scale=2\.0,\)\n/);
  // A file that already imports the module gets no second import.
  const loaded = await lever(LOOP.replace('import torch\n', 'import torch\nimport torch.utils.checkpoint\n'), 'checkpoint');
  assert.deepEqual(loaded.imports, []);
  // Tabs: the unit of the file is kept.
  const tabs = await lever(LOOP.replace(/^( {4})+/gm, (m) => '\t'.repeat(m.length / 4)), 'checkpoint');
  assert.match(tabs.text, /\t\tfor blk in self\.blocks:\n\t\t\tif self\.training and torch\.is_grad_enabled\(\):\n\t\t\t\tx = /);
});

test('checkpoint skips loops that are not exactly one block call, and an applied loop', async () => {
  const cases: [string, string, RegExp][] = [
    ['two statements', LOOP.replace('            x = blk(x)\n', '            x = blk(x)\n            x = x * 2\n'), /is not exactly one `x = blk\(x, \.\.\.\)`/],
    ['other first argument', LOOP.replace('x = blk(x)', 'x = blk(mask)'), /does not pass `x` as the block's first argument/],
    ['indexed output', LOOP.replace('x = blk(x)', 'x = blk(x)[0]'), /is not exactly one/],
    ['reserved keyword', LOOP.replace('x = blk(x)', 'x = blk(x, debug=True)'), /takes `debug=`, a keyword checkpoint\(\) keeps for itself/],
    ['for-else', LOOP.replace('        return x\n', '        else:\n            pass\n        return x\n'), /has an `else:` clause/],
    ['not a module', LOOP.replace('class Net(nn.Module):', 'class Net:'), /`Net` has no base class, so it is not an nn\.Module/],
  ];
  for (const [what, src, reason] of cases) {
    const r = await lever(src, 'checkpoint');
    assert.equal(r.applied, 0, what);
    assert.match(itemAt(r.skipped, 0).reason, reason, what);
  }
  const once = await lever(LOOP, 'checkpoint');
  const twice = await lever(once.text, 'checkpoint');
  assert.equal(twice.applied, 0);
  assert.equal(twice.skipped[0]?.code, 'already');
  // Loops over something other than the module's own list are not candidates at all.
  assert.deepEqual((await lever(LOOP.replace('in self.blocks', 'in blocks'), 'checkpoint')).skipped, []);
});

test('checkpoint for HF models: gradient_checkpointing_enable() after the line that builds the model', async () => {
  const src = `from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    tok = AutoTokenizer.from_pretrained("gpt2")
    model = AutoModelForCausalLM.from_pretrained(
        "gpt2",
    ).to("cuda")
    train(model, tok)
`;
  const r = await lever(src, 'checkpoint');
  assert.equal(r.text, src.replace('    ).to("cuda")\n', '    ).to("cuda")\n    model.gradient_checkpointing_enable()\n'));
  assert.equal(r.changes[0]?.form, 'hf-checkpoint');
  assert.equal((await lever(r.text, 'checkpoint')).applied, 0);
  const returned = await lever('from transformers import BertForMaskedLM\n\n\ndef build(c):\n    return BertForMaskedLM(c)\n', 'checkpoint');
  assert.equal(returned.skipped[0]?.code, 'model-form');
});

const STEP = `import torch
import torch.nn.functional as F


def train(model, batches, steps):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    for x, y in batches:
        logits = model(x)
        loss = criterion(logits.view(-1, logits.size(-1)),
                         y.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
`;

test('autocast wraps a two-statement forward and loss, continuation lines included; zero_grad stays outside', async () => {
  const r = await lever(STEP, 'autocast');
  assert.equal(
    r.text,
    STEP.replace(
      '        logits = model(x)\n        loss = criterion(logits.view(-1, logits.size(-1)),\n                         y.view(-1))\n',
      '        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):\n            logits = model(x)\n            loss = criterion(logits.view(-1, logits.size(-1)),\n                             y.view(-1))\n',
    ),
  );
  // `model(**batch)` has no positional input: the device comes from the parameters.
  const kw = await lever(STEP.replace('logits = model(x)', 'logits = model(**x)'), 'autocast');
  assert.match(kw.text, /with torch\.autocast\(device_type=next\(model\.parameters\(\)\)\.device\.type, dtype=torch\.bfloat16\):/);
});

test('autocast skips what it cannot wrap, with the reason', async () => {
  const cases: [string, string, string, RegExp][] = [
    ['a print between loss and backward', STEP.replace('        opt.zero_grad()\n', '        print(loss.item())\n'), 'between', /`print\(loss\.item\(\)\)` \(line \d+\) stands between the computation of `loss` and backward\(\)/],
    ['already autocast', STEP.replace('    for x, y', '    scaler = torch.cuda.amp.GradScaler()\n    for x, y'), 'mixed-precision', /already uses reduced precision \(`GradScaler` at line \d+\)/],
    ['a half model', STEP.replace('    opt = ', '    model = model.half()\n    opt = '), 'mixed-precision', /`half`/],
    ['no trained model', STEP.replace('model.parameters()', 'params'), 'no-forward', /no model whose \.parameters\(\) the file uses is called/],
    ['a scaled backward', STEP.replace('loss.backward()', '(loss / 4).backward()'), 'backward-form', /is not called on a plain loss variable/],
    ['backward outside a loop', STEP.replace('    for x, y in batches:\n', '    if batches:\n        x, y = batches\n'), 'backward-form', /not directly in the body of a training loop/],
    ['a string over lines', STEP.replace('logits = model(x)', 'logits = model(x, """a\nb""")'), 'layout', /string over several lines/],
  ];
  for (const [what, src, code, reason] of cases) {
    const r = await lever(src, 'autocast');
    assert.equal(r.applied, 0, what);
    assert.equal(r.skipped[0]?.code, code, `${what}: ${r.skipped[0]?.reason}`);
    assert.match(r.skipped[0].reason, reason, what);
  }
  const once = await lever(STEP, 'autocast');
  assert.equal((await lever(once.text, 'autocast')).skipped[0]?.code, 'mixed-precision');
});

test('a line selects one pattern; a line with none says so', async () => {
  const src = sample('gpt_tiny.py');
  const lines = src.split('\n');
  const scores = lines.findIndex((l) => l.includes('att = (q @ k'));
  for (const l of [scores, scores + 2, scores + 4]) assert.equal((await lever(src, 'sdpa', { line: l })).applied, 1, `line ${l + 1}`);
  const none = await lever(src, 'sdpa', { line: 0 });
  assert.deepEqual(none.skipped.map((s) => [s.line, s.code]), [[0, 'no-pattern']]);
  assert.match(none.skipped[0]?.reason ?? '', /^line 1: no eager attention/);
  const loop = lines.findIndex((l) => l.includes('for block in self.h'));
  const all = await leversAt(src, loop);
  assert.equal(all.checkpoint.applied, 1);
  assert.equal(all.sdpa.applied, 0);
  assert.equal(all.autocast.applied, 0);
  assert.equal(all.checkpoint.text, (await lever(src, 'checkpoint')).raw);
});

test('CRLF and CR files keep their line breaks: the same rewrite with CRLF or CR line breaks', async () => {
  // The minGPT fixture keeps comments inside its eager chain: they move above the SDPA call.
  for (const [name, lf] of [['gpt_tiny.py', sample('gpt_tiny.py')], ['vit_digits.py', sample('vit_digits.py')], ['mingpt_style.py', fixture('mingpt_style.py')]] as const) {
    for (const l of LEVERS) {
      const a = await lever(lf, l);
      const b = await lever(lf.replace(/\n/g, '\r\n'), l);
      assert.equal(b.text, a.text.replace(/\n/g, '\r\n'), `${name} ${l}`);
      assert.ok(!/[^\r]\n|\r\r/.test(b.text), `${name} ${l}: a bare LF or a doubled CR`);
      const c = await lever(lf.replace(/\n/g, '\r'), l);
      assert.equal(c.raw, a.raw.replace(/\n/g, '\r'), `${name} ${l} (CR)`);
    }
  }
});

test('idempotence on every sample and fixture: a second application changes nothing', async () => {
  const files = [
    ...readdirSync(FIXTURES()).filter((f) => f.endsWith('.py')).map((f) => fixture(f)),
    ...readdirSync(join(repoRoot(), 'samples')).filter((f) => f.endsWith('.py')).map((f) => sample(f)),
  ];
  let applied = 0;
  for (const text of files) {
    for (const l of LEVERS) {
      const once = await lever(text, l);
      applied += once.applied;
      const twice = await lever(once.text, l);
      assert.equal(twice.applied, 0, `${l}: ${twice.changes.map((c) => c.description).join('; ')}`);
      assert.equal(twice.text, once.text);
    }
  }
  assert.ok(applied >= 6, `only ${applied} rewrites over the fixtures and samples`);
});


test('fuzz: 1000 mutated inputs never throw, never fail internally, and their edits reproduce the text', async () => {
  const sources = [sample('gpt_tiny.py'), sample('vit_digits.py'), fixture('nanogpt_style.py'), fixture('hf_bert_style.py'), STEP, LOOP, attention(CHAIN)];
  const r = rng(20261204);
  const pieces = ['(', ')', ':', '"""', "'", '\\', '\n    ', '\t', 'def ', 'for b in self.h:', '@', '[', '=', ',', '\r\n', 'att', ' @ v', '.backward()', '#', '\u0000'];
  for (let i = 0; i < 1000; i++) {
    let t = itemAt(sources, r(sources.length));
    for (let j = 0, n = 1 + r(4); j < n; j++) {
      const at = r(t.length + 1);
      const op = r(4);
      if (op === 0) t = t.slice(0, at) + t.slice(at + r(80));
      else if (op === 1) t = t.slice(0, at) + itemAt(pieces, r(pieces.length)) + t.slice(at);
      else if (op === 2) t = t.slice(0, at);
      else t = t.slice(0, at) + String.fromCharCode(...Array.from({ length: 1 + r(4) }, () => r(0x10000))) + t.slice(at);
    }
    for (const l of LEVERS) {
      const lines = t.split(/\r\n|\n|\r/).length;
      await lever(t, l);
      await lever(t, l, { line: r(lines + 2) });
    }
  }
  const deep = `x = ${'('.repeat(5000)}1${')'.repeat(5000)}\ny = ${'1 + '.repeat(20000)}1\nz = ${'-'.repeat(5000)}1\n`;
  for (const l of LEVERS) await lever(deep, l);
});

test('checkpoint leaves a block loop that hands each block a KV cache (the recomputation would update it twice)', async () => {
  const src = [
    'import torch',
    'import torch.nn as nn',
    '',
    'class Decoder(nn.Module):',
    '    def forward(self, x, past_key_values=None):',
    '        for layer in self.layers:',
    '            x = layer(x, layer_past=past_key_values, use_cache=True)',
    '        for block in self.blocks:',
    '            x = block(x, kv_cache)',
    '        for block in self.more:',
    '            x = block(x, mask=None)',
    '        return x',
    '',
  ].join('\n');
  const r = await lever(src, 'checkpoint');
  assert.deepEqual(r.skipped.map((s) => [s.line, s.code]), [[5, 'kv-cache'], [7, 'kv-cache']]);
  assert.equal(r.applied, 1);
  assert.match(r.text, /torch\.utils\.checkpoint\.checkpoint\(block, x, mask=None, use_reentrant=False\)/);
});

test('advice page: Markdown with the lever, why this site was left, and the docs; code from the file is escaped', () => {
  const md = adviceMarkdown('sdpa', 'the mask [x](command:membit.profileRun) is used again.', 'https://pytorch.org/docs/x', 'models/gpt_2.py:12');
  assert.match(md, /^# Fused attention \(scaled_dot_product_attention\)\n\n\*models\/gpt\\_2\\\.py:12\*\n/);
  assert.match(md, /\n## Why Membit did not rewrite it here\n\nthe mask \\\[x\\\]\\\(command:membit\\\.profileRun\\\) is used again\.\n/);
  assert.ok(!md.includes('](command:'), 'no link can be made from the reason');
  assert.match(md, /\n## Read more\n\n\[https:\/\/pytorch\.org\/docs\/x\]\(https:\/\/pytorch\.org\/docs\/x\)\n$/);
  assert.ok(!adviceMarkdown('checkpoint', undefined, 'https://d').includes('Why Membit'), 'no reason, no section');
});

test('HF: a dict argument beside attn_implementation= (device_map={"": 0}) does not hide the model', async () => {
  const hf = `from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("gpt2", attn_implementation="eager", device_map={"": 0})
train(model)
`;
  const sdpa = await lever(hf, 'sdpa');
  assert.equal(sdpa.applied, 1);
  assert.equal(sdpa.text, hf.replace('"eager"', '"sdpa"'));
  const ck = await lever(hf, 'checkpoint');
  assert.equal(ck.text, hf.replace('{"": 0})\n', '{"": 0})\nmodel.gradient_checkpointing_enable()\n'));
});

test('sdpa: q, k and v split by a list comprehension still come from the call\'s input, so the causal mask lines up', async () => {
  const src = replaced(
    attention(CHAIN),
    ['        q, k, v = self.qkv(x).split(C, dim=2)\n', '        q, k, v = [t.view(B, T, 1, C).transpose(1, 2) for t in self.qkv(x).split(C, dim=2)]\n'],
    ['        q = q.view(B, T, 1, C).transpose(1, 2)\n        k = k.view(B, T, 1, C).transpose(1, 2)\n        v = v.view(B, T, 1, C).transpose(1, 2)\n', ''],
  );
  const r = await lever(src, 'sdpa');
  assert.equal(r.applied, 1, JSON.stringify(r.skipped));
  assert.match(sdpaLine(r) ?? '', /is_causal=True\)$/);
});

test('autocast: a forward that takes its batch through a dict comprehension is wrapped', async () => {
  const step = STEP.replace('logits = model(x)', 'logits = model(**{k: t.to(dev) for k, t in x.items()})');
  const r = await lever(step, 'autocast');
  assert.equal(r.applied, 1, JSON.stringify(r.skipped));
  assert.match(r.text, /with torch\.autocast\(device_type=next\(model\.parameters\(\)\)\.device\.type, dtype=torch\.bfloat16\):\n {12}logits = model\(\*\*\{k: t\.to\(dev\) for k, t in x\.items\(\)\}\)/);
});

test('checkpoint copies the block arguments as written, parentheses included', async () => {
  const r = await lever(LOOP.replace('x = blk(x)', 'x = blk((x), mask)'), 'checkpoint');
  assert.equal(r.applied, 1);
  assert.match(r.text, /\n {16}x = torch\.utils\.checkpoint\.checkpoint\(blk, \(x\), mask, use_reentrant=False\)\n/);
});

test('checkpoint: a model read only through a method chain split over lines is not trained', async () => {
  const src = `from transformers import GPT2LMHeadModel


def load(name):
    model_hf = GPT2LMHeadModel.from_pretrained(name)
    sd_hf = (model_hf
             .state_dict())
    return sd_hf
`;
  const r = await lever(src, 'checkpoint');
  assert.equal(r.applied, 0);
  assert.equal(r.skipped[0]?.code, 'not-trained');
  assert.match(itemAt(r.skipped, 0).reason, /`model_hf\.state_dict`/);
});

test('a file whose line endings differ from its first line break: the rewritten lines end like their neighbours, are recorded, and revert restores them', async () => {
  const src = attention(CHAIN).replace('\n', '\r\n');
  const r = await lever(src, 'sdpa');
  assert.equal(r.applied, 1);
  assert.match(r.raw, /\n {8}# membit: sdpa rewrote the 1 line above; `membit convert --revert` restores the 5 below\n/);
  const loop = LOOP.replace('\n', '\r\n');
  const c = await lever(loop, 'checkpoint');
  assert.equal(c.applied, 1);
  assert.equal(c.raw.split('\r\n').length, 2, 'only the first line ends in CRLF');
});

test('a bracket left open further down (a line being typed) does not hide the patterns above it', async () => {
  const src = replaced(fixture('mingpt_style.py'), ['vocab_size, bias=False)', 'vocab_size, bias=(False)']);
  const r = await lever(src, 'sdpa');
  assert.equal(r.applied, 1, JSON.stringify(r.skipped));
  assert.equal(r.changes[0]?.form, 'sdpa-chain');
});
