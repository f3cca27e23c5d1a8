/**
 * Config defaults from the config class a modeling file imports from its folder
 * (`from .configuration_pico import PicoConfig`): what is read, what wins, and what is never read.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { RelatedSource, ScanResult, Site } from '../../src/core/scan';
import { readRelated } from '../../src/core/scan/related';
import { capture } from './cliCapture';
import { main } from '../../src/core/cli/main';
import { repoRoot, scanner } from './scanSupport';

const DIR = () => join(repoRoot(), 'test', 'fixtures', 'config');
const MODELING = () => readFileSync(join(DIR(), 'modeling_pico.py'), 'utf8');

const site = (r: ScanResult, kind: string, member: string): Site => {
  const s = r.sites.find((x) => x.kind === kind && x.binding === member);
  assert.ok(s, `no ${kind} bound to ${member}: ${r.sites.map((x) => `${x.kind}@${x.binding}`).join(', ')}`);
  return s;
};

test('a modeling file reads its widths and rates from the config class next to it', async () => {
  const s = await scanner();
  const r = s.scan(MODELING(), join(DIR(), 'modeling_pico.py'), { relatedDir: DIR() });
  assert.equal(r.error, undefined);
  assert.deepEqual(r.config.hidden, { value: 1024, name: 'hidden_size', line: 9, file: 'configuration_pico.py' });
  assert.deepEqual(r.config.seqLen, { value: 2048, name: 'max_position_embeddings', line: 13, file: 'configuration_pico.py' });
  assert.equal(r.config.heads?.value, 16);
  assert.equal(r.config.layers?.value, 8);
  // The helper's `factor=4` is a parameter of a function, not of the config.
  assert.equal(r.config.mlpRatio, undefined);

  const drop = site(r, 'dropout', 'self.dropout');
  assert.equal(drop.estimate.elements, 2048 * 1024);
  assert.equal(drop.estimate.perSample, true);
  assert.match(drop.estimate.note ?? '', /L=2048 from max_position_embeddings \(configuration_pico\.py line 14\), d=1024 from hidden_size \(configuration_pico\.py line 10\)/);
  // attention_dropout defaults to 0.0 in the config: no mask unless the config changes it.
  const attn = site(r, 'attn-dropout', 'self.attn_dropout');
  assert.equal(attn.estimate.maskBytes, 0);
  assert.match(attn.estimate.note ?? '', /p is 0 in the config defaults of configuration_pico\.py \(config\.attention_dropout = 0\.0\)/);
  const ffn = r.sites.find((x) => x.kind === 'ffn');
  assert.equal(ffn?.ffn?.inWidth, 1024);
  assert.equal(ffn.ffn.hiddenWidth, 4096);

  // Without the folder nothing is known: the same sites, no figures.
  const alone = s.scan(MODELING(), 'modeling_pico.py');
  assert.deepEqual(alone.sites.map((x) => x.kind), r.sites.map((x) => x.kind));
  assert.deepEqual(alone.config, {});
  assert.equal(site(alone, 'dropout', 'self.dropout').estimate.source, 'unknown');
  assert.notEqual(site(alone, 'attn-dropout', 'self.attn_dropout').estimate.maskBytes, 0);
});

test('imported defaults: __init__ keywords count, the file\'s own values win, bare names stay the file\'s, classes that disagree give nothing', async () => {
  const s = await scanner();
  const config: RelatedSource = {
    module: '.configuration_duo',
    file: 'configuration_duo.py',
    text: [
      'class DuoTextConfig(PretrainedConfig):',
      '    def __init__(self, hidden_size=512, num_attention_heads=8, max_position_embeddings=77, intermediate_size=2048, dropout=0.0, **kwargs):',
      '        super().__init__(**kwargs)',
      '        self.hidden_size = hidden_size',
      '    def to_dict(self, depth=3):',
      '        return {}',
      'class DuoVisionConfig(PretrainedConfig):',
      '    def __init__(self, hidden_size=768, num_attention_heads=12, max_position_embeddings=77, image_size=224, patch_size=32, **kwargs):',
      '        super().__init__(**kwargs)',
      'class DuoUnusedConfig(PretrainedConfig):',
      '    batch_size: int = 64',
      'class DuoFieldConfig(PretrainedConfig):',
      '    hidden_size: int = 640',
    ].join('\n'),
  };
  const modeling = (imports: string, body: string[]) =>
    ['import torch.nn as nn', imports, 'class Block(nn.Module):', '    def __init__(self, config):', '        super().__init__()', ...body.map((l) => `        ${l}`)].join('\n');

  // One class: its __init__ defaults; `depth=3` of another method is not the config's.
  const one = s.scan(modeling('from .configuration_duo import DuoTextConfig', ['self.drop = nn.Dropout(config.dropout)', 'self.up = nn.Linear(config.hidden_size, config.intermediate_size)', 'self.down = nn.Linear(config.intermediate_size, config.hidden_size)']), 'm.py', { related: [config] });
  assert.deepEqual(one.config.hidden, { value: 512, name: 'hidden_size', line: 1, file: 'configuration_duo.py' });
  assert.equal(one.config.seqLen?.value, 77);
  assert.equal(one.config.layers, undefined);
  assert.equal(one.config.batch, undefined);
  assert.equal(one.sites.find((x) => x.kind === 'dropout')?.estimate.maskBytes, 0);
  assert.equal(one.sites.find((x) => x.kind === 'ffn')?.ffn?.hiddenWidth, 2048);

  // Both classes: they disagree on hidden_size and heads, so neither is taken; the length they share is.
  const both = s.scan(modeling('from .configuration_duo import DuoTextConfig, DuoVisionConfig', ['self.drop = nn.Dropout(0.1)']), 'm.py', { related: [config] });
  assert.equal(both.config.hidden, undefined);
  assert.equal(both.config.heads, undefined);
  assert.equal(both.config.seqLen?.value, 77);

  // The file's own value beats the imported default; a bare name is never the config's.
  const own = s.scan(
    ['import torch.nn as nn', 'from .configuration_duo import DuoTextConfig as TC', 'hidden_size = 256', 'def make(hidden_size):', '    return nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Linear(4 * hidden_size, hidden_size))'].join('\n'),
    'm.py',
    { related: [config] },
  );
  assert.deepEqual(own.config.hidden, { value: 256, name: 'hidden_size', line: 2 });
  assert.equal(own.config.heads?.file, 'configuration_duo.py');
  assert.equal(own.sites.find((x) => x.kind === 'ffn')?.ffn?.inWidth, 256);
  const bare = s.scan(
    ['import torch.nn as nn', 'from .configuration_duo import DuoFieldConfig', 'def make(hidden_size):', '    return nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Linear(4 * hidden_size, hidden_size))'].join('\n'),
    'm.py',
    { related: [config] },
  );
  assert.equal(bare.config.hidden?.value, 640);
  const ffn = bare.sites.find((x) => x.kind === 'ffn');
  assert.ok(ffn);
  assert.equal(ffn.ffn?.inWidth, undefined);

  // Only `.module` imports of classes named *Config are followed, and only with a source or a folder.
  const none = s.scan(modeling('from .configuration_duo import duo_defaults\nfrom ..configuration_duo import DuoTextConfig', ['self.drop = nn.Dropout(0.1)']), 'm.py', { related: [config] });
  assert.deepEqual(none.config, {});
  const noFolder = s.scan(modeling('from .configuration_duo import DuoTextConfig', ['self.drop = nn.Dropout(0.1)']), 'm.py');
  assert.deepEqual(noFolder.config, {});
});

test('reading the config: only the scanned file\'s folder, capped in size, unreadable files skipped, rereads after a change', async () => {
  const root = mkdtempSync(join(tmpdir(), 'membit-related-'));
  try {
    const dir = join(root, 'models', 'pico');
    mkdirSync(dir, { recursive: true });
    const cfg = (h: number) => `class PicoConfig:\n    hidden_size: int = ${h}\n    max_position_embeddings: int = 128\n`;
    writeFileSync(join(root, 'models', 'configuration_up.py'), cfg(111));
    writeFileSync(join(root, 'outside.py'), cfg(222));
    writeFileSync(join(dir, 'configuration_pico.py'), cfg(1024));
    // A link out of the folder, a folder with a module's name, and a file over the cap.
    symlinkSync(join(root, 'outside.py'), join(dir, 'configuration_link.py'));
    mkdirSync(join(dir, 'configuration_dir.py'));
    writeFileSync(join(dir, 'configuration_big.py'), `${cfg(333)}${'#'.repeat(4096)}\n`);

    assert.deepEqual(
      readRelated(dir, ['.configuration_pico', '.configuration_link', '.configuration_dir', '.configuration_big', '.configuration_missing', '..configuration_up', '.configuration_pico'], 1024).map((r) => r.file),
      ['configuration_pico.py'],
    );
    assert.deepEqual(readRelated(dir, ['.configuration_big'], 8192).map((r) => r.file), ['configuration_big.py']);
    assert.deepEqual(readRelated(join(root, 'nope'), ['.configuration_pico']), []);

    const s = await scanner();
    const text = ['import torch.nn as nn', 'from .configuration_pico import PicoConfig', 'from .configuration_link import LinkConfig', 'class M(nn.Module):', '    def __init__(self, config):', '        super().__init__()', '        self.d = nn.Dropout(0.1)'].join('\n');
    const doc = s.open(join(dir, 'modeling_pico.py'), text, { relatedDir: dir });
    try {
      assert.equal(doc.result.config.hidden?.value, 1024);
      assert.equal(doc.result.sites[0]?.estimate.elements, 128 * 1024);
      // The config changes on disk: the next scan of the modeling file sees it.
      writeFileSync(join(dir, 'configuration_pico.py'), cfg(20480));
      assert.equal(doc.update(text).config.hidden?.value, 20480);
    } finally {
      doc.dispose();
    }

    // The CLI reads the folder of each file it scans.
    writeFileSync(join(dir, 'modeling_pico.py'), text);
    const io = capture(root);
    assert.equal(await main(['scan', join('models', 'pico', 'modeling_pico.py'), '--json'], io), 0, io.stderr);
    const out = JSON.parse(io.stdout) as { sites: { estimate: { elements: number | null; note: string | null } }[] };
    assert.equal(out.sites[0]?.estimate.elements, 128 * 20480);
    assert.match(out.sites[0].estimate.note ?? '', /configuration_pico\.py line 2/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
