/**
 * Reports are untrusted input: their strings never become a RegExp, a Markdown link,
 * a terminal escape sequence, a prototype key that passes the schema, or a path that
 * leaves the workspace through a symlink.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import MarkdownIt from 'markdown-it';
import { capture } from './cliCapture';
import { main } from '../../src/core/cli/main';
import { classTotals, findClassLine, pathMatcher } from '../../src/core/report/classes';
import { validate, type Schema } from '../../src/core/report/jsonSchema';
import { parseReport } from '../../src/core/report/model';
import { REPORT_SCHEMA } from '../../src/core/report/schema';
import type { Report } from '../../src/core/report/types';
import { measuredBlocks } from '../../src/core/scan/levers';
import { jsonTerminalSafe, mdCode, mdText, resolveInside, terminalSafe } from '../../src/core/untrusted';

const fixture = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'reports', 'gpt_tiny_cpu_baseline.json');
const baseline = (): Report => JSON.parse(readFileSync(fixture, 'utf8')) as Report;

test('class lines are found by name as text: regex syntax in a report type neither backtracks nor throws', { timeout: 20_000 }, () => {
  const lines = ['import torch', 'class Foo(nn.Module):', '    pass', 'class FooBar:', '  class  Foo :', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaa'];
  assert.equal(findClassLine(lines, 'Foo', 1), 1);
  assert.equal(findClassLine(lines, 'Foo', 4), 4, 'the nearest one');
  assert.equal(findClassLine(lines, 'FooBar', 0), 3);
  assert.equal(findClassLine(lines, 'Fo', 1), -1, 'a prefix is not the name');
  // `(a+)+x` took 7.3 s against a 28-character line as new RegExp(`^\s*class\s+${type}\b`); `Foo(` threw.
  assert.equal(findClassLine(lines, '(a+)+x', 5), -1);
  assert.equal(findClassLine(lines, 'Foo(', 1), -1);
  assert.equal(findClassLine(['class (a+)+x:'], '(a+)+x', 0), 0, 'compared literally');
  assert.equal(findClassLine(['class Foo:'], 'Foo', 0 + 5000), -1, 'outside the window');
});

test('module paths with * match segment-wise; * inside a segment is literal (no RegExp)', { timeout: 20_000 }, () => {
  assert.equal(pathMatcher('h.*.attn')('h.3.attn'), true);
  assert.equal(pathMatcher('h.*.attn')('h.3.mlp'), false);
  assert.equal(pathMatcher('h.*.attn')('h.3.attn.drop'), false);
  assert.equal(pathMatcher('a*')('aaaa'), false, 'a* is a name, not a repetition');
  assert.equal(pathMatcher('a*')('a*'), true);
  // 5.6 s on 26 characters through the old pattern: (a*)* style nesting inside segments.
  const evil = `${'a*'.repeat(30)}b`;
  assert.equal(pathMatcher(evil)('a'.repeat(40)), false);
});

test('classTotals with a hostile type string stays data', () => {
  const r = baseline();
  const m = r.modules.find((x) => x.defined_at);
  assert.ok(m?.defined_at);
  m.type = '(a+)+x';
  const totals = classTotals(r, m.defined_at.file);
  assert.ok([...totals.values()].some((t) => t.type === '(a+)+x'));
});

const md = new MarkdownIt();

test('mdCode and mdText: no report string becomes a link, HTML or a second table cell', () => {
  const hostile = [
    '`](command:membit.convertToPackedDropout?%5B%5D) [x](command:membit.profileRun)',
    '``[x](command:membit.profileRun)``',
    '<a href="command:membit.profileRun">x</a>',
    'a|b|[x](command:membit.profileRun)',
    'line\n\n[x](command:membit.profileRun)',
    '`',
    '',
  ];
  for (const s of hostile) {
    const code = md.renderInline(mdCode(s));
    assert.doesNotMatch(code, /<a[\s>]/, `${JSON.stringify(s)} -> ${code}`);
    assert.ok(code.startsWith('<code>') && code.endsWith('</code>'), code);
    const text = md.renderInline(mdText(s));
    assert.doesNotMatch(text, /<a[\s>]|<code>/, `${JSON.stringify(s)} -> ${text}`);
    // A table row keeps three cells whatever the op name holds.
    const table = md.render(`| op | bytes | n |\n|---|---:|---:|\n| ${mdCode(s, { table: true })} | 1 | 2 |\n`);
    assert.equal((table.match(/<td/g) ?? []).length, 3, table);
    assert.doesNotMatch(table, /<a[\s>]/, table);
  }
  // What a plain string shows is what it is.
  assert.equal(md.renderInline(mdCode('transformer.h.0.mlp')), '<code>transformer.h.0.mlp</code>');
  assert.equal(md.renderInline(mdText('a_b*c [d]')), 'a_b*c [d]');
});

test('terminalSafe shows escape sequences instead of sending them; JSON keeps the same strings', () => {
  const evil = 'gpt.py\u001b]0;pwned\u0007\u001b[2J\u009b31m\u202ehidden\rover';
  const safe = terminalSafe(evil);
  // eslint-disable-next-line no-control-regex -- these patterns match control characters on purpose
  assert.doesNotMatch(safe, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202e]/);
  assert.match(safe, /\\x1b\]0;pwned\\x07/);
  assert.equal(terminalSafe('a\tb\nc'), 'a\tb\nc');
  const json = JSON.stringify({ s: evil });
  assert.deepEqual(JSON.parse(jsonTerminalSafe(json)), { s: evil });
  // eslint-disable-next-line no-control-regex -- these patterns match control characters on purpose
  assert.doesNotMatch(jsonTerminalSafe(json), /[\u0000-\u001f\u007f-\u009f\u202e]/);
});

test('membit report prints no control character a report carries, in text, JSON and Markdown', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'membit-untrusted-'));
  try {
    const r = baseline();
    r.run.script = 'gpt.py\u001b]52;c;ZWNobyBwd25lZA==\u0007\u001b[2J';
    r.run.device.name = 'GPU\u009b2J';
    const line = r.lines[0];
    assert.ok(line);
    line.module = 'h.0\u001b[8m';
    writeFileSync(join(dir, 'r.json'), JSON.stringify(r));
    writeFileSync(join(dir, 'r2.json'), JSON.stringify(r));
    // eslint-disable-next-line no-control-regex -- these patterns match control characters on purpose
    const CTRL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
    for (const argv of [['report', 'r.json'], ['report', 'r.json', '--json'], ['report', 'r.json', 'r2.json', '--markdown'], ['report', 'r.json', 'r2.json', '--json']]) {
      const io = capture(dir);
      assert.equal(await main(argv, io), 0, io.stderr);
      assert.doesNotMatch(io.stdout, CTRL, argv.join(' '));
      if (argv.includes('--json')) JSON.parse(io.stdout);
    }
    const io = capture(dir);
    await main(['report', 'r.json'], io);
    assert.match(io.stdout, /gpt\.py\\x1b\]52;c;/);
    // A validation error that quotes the bad value is made safe too.
    r.run.status = 'ok\u001b[2J' as Report['run']['status'];
    writeFileSync(join(dir, 'bad.json'), JSON.stringify(r));
    const bad = capture(dir);
    assert.equal(await main(['report', 'bad.json'], bad), 1);
    assert.match(bad.stderr, /status/);
    assert.doesNotMatch(bad.stderr, CTRL);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('jsonSchema: __proto__, constructor and toString do not pass additionalProperties: false', () => {
  const schema: Schema = { type: 'object', required: ['a'], properties: { a: { type: 'integer' } }, additionalProperties: false };
  for (const k of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
    const v = JSON.parse(`{"a": 1, "${k}": {"x": 1}}`) as unknown;
    const errors = validate(schema, v);
    assert.equal(errors.length, 1, `${k}: ${JSON.stringify(errors)}`);
    assert.equal(errors[0]?.path, `$.${k}`);
  }
  // A required key is an own key: the prototype's toString does not satisfy it.
  assert.equal(validate({ type: 'object', required: ['toString'] }, {}).length, 1);
  // And through the real report schema.
  const text = JSON.stringify(baseline()).replace('"run":{', '"run":{"constructor":"x",');
  assert.match(text, /"constructor":"x"/);
  const parsed = parseReport(text, REPORT_SCHEMA, 'r.json');
  assert.equal(parsed.ok, false);
});

test('resolveInside: a symlink in the workspace that points outside is outside', () => {
  const base = mkdtempSync(join(tmpdir(), 'membit-inside-'));
  try {
    const ws = join(base, 'ws');
    mkdirSync(join(ws, 'src'), { recursive: true });
    mkdirSync(join(base, 'secret'));
    writeFileSync(join(base, 'secret', 'key.py'), 'x');
    writeFileSync(join(ws, 'src', 'a.py'), 'x');
    symlinkSync(join(base, 'secret'), join(ws, 'link'));
    symlinkSync(join(base, 'secret', 'key.py'), join(ws, 'key.py'));
    assert.equal(resolveInside(ws, 'src/a.py'), join(ws, 'src', 'a.py'));
    assert.equal(resolveInside(ws, 'src/new.py'), join(ws, 'src', 'new.py'), 'a file that does not exist yet');
    assert.equal(resolveInside(ws, 'link/key.py'), undefined);
    assert.equal(resolveInside(ws, 'key.py'), undefined);
    assert.equal(resolveInside(ws, '../secret/key.py'), undefined);
    assert.equal(resolveInside(ws, join(base, 'secret', 'key.py')), undefined);
    assert.equal(resolveInside(ws, '..foo.py'), join(ws, '..foo.py'), 'a name starting with two dots is inside');
    // The workspace itself reached through a link is still the workspace.
    symlinkSync(ws, join(base, 'wslink'));
    assert.equal(resolveInside(join(base, 'wslink'), 'src/a.py'), join(base, 'wslink', 'src', 'a.py'));
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('measuredBlocks groups a list by index with report paths compared as text', () => {
  const mods = [
    { path: 'h(+', type: 'ModuleList', createdLine: 3, savedBytes: 0 },
    { path: 'h(+.0.attn', savedBytes: 10 },
    { path: 'h(+.1.attn', savedBytes: 20 },
    { path: 'h(+.1x.attn', savedBytes: 1000 },
    { path: 'hh(+.2', savedBytes: 1000 },
  ];
  assert.deepEqual(measuredBlocks(mods, 3), { path: 'h(+', blocks: [10, 20] });
});
