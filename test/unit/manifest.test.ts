import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Commands } from '../../src/commands';
import { DEFAULT_SETTINGS, flattenDefaults, readSettings } from '../../src/core/settings';

import pkg from '../../package.json';
import { itemAt } from '../../src/core/arrays';

test('package.json contributes exactly the commands in src/commands.ts', () => {
  const contributed = pkg.contributes.commands.map((c: { command: string }) => c.command).sort();
  assert.deepEqual(contributed, Object.values(Commands).sort());
});

test('every command has a title and the Membit category, so the palette finds it', () => {
  for (const c of pkg.contributes.commands) {
    assert.ok(c.title && c.title.length > 3, c.command);
    assert.equal(c.category, 'Membit', c.command);
  }
});

test('activation is on Python files and commands, never on *', () => {
  assert.ok(!pkg.activationEvents.includes('*'));
  assert.ok(pkg.activationEvents.includes('onLanguage:python'));
});

test('untrusted workspaces are limited, and code-running settings are restricted', () => {
  const u = pkg.capabilities.untrustedWorkspaces;
  assert.equal(u.supported, 'limited');
  for (const k of ['membit.python', 'membit.targets', 'membit.runs']) assert.ok(u.restrictedConfigurations.includes(k), k);
});

test('the convert commands are in a Membit group of the context menu, for Python, each only on a site it applies to', () => {
  const menu = pkg.contributes.menus['editor/context'];
  /** Evaluates an entry's `when` as VS Code would for a Python file with these site kinds at the cursor. */
  const shows = (when: string, kinds: string) =>
    when.split(' && ').every((part) => {
      if (part === 'editorLangId == python') return true;
      const m = /^membit\.cursorSite =~ \/(.*)\/$/.exec(part);
      assert.ok(m, `unexpected clause ${part}`);
      return new RegExp(itemAt(m, 1)).test(kinds);
    });
  const expect: Record<string, [string, boolean][]> = {
    [Commands.convertToPackedDropout]: [['dropout', true], ['attn-dropout', true], ['dropout-call', true], ['ffn', false], ['fused-attn-dropout', false], ['', false]],
    [Commands.convertToRecomputeDropout]: [['attn-dropout eager-attn', true], ['ffn', false]],
    [Commands.convertFfnToSparse24]: [['ffn', true], ['dropout', false], ['', false]],
    [Commands.convertAllInFile]: [['', true]],
  };
  for (const [id, cases] of Object.entries(expect)) {
    const entry = menu.find((m: { command: string }) => m.command === id);
    assert.ok(entry, `${id} is not in the editor context menu`);
    assert.match(entry.group, /^membit@\d+$/);
    assert.ok(entry.when.startsWith('editorLangId == python'));
    for (const [kinds, shown] of cases) assert.equal(shows(entry.when, kinds), shown, `${id} with "${kinds}" at the cursor`);
  }
});

test('the typed settings mirror contributes.configuration, defaults included', () => {
  const props = pkg.contributes.configuration.properties as Record<string, { default: unknown }>;
  const fromPkg = new Map(Object.entries(props).map(([k, v]) => [k.replace(/^membit\./, ''), v.default]));
  const fromTs = flattenDefaults(DEFAULT_SETTINGS);
  assert.deepEqual([...fromTs.keys()].sort(), [...fromPkg.keys()].sort());
  for (const [k, v] of fromTs) assert.deepEqual(fromPkg.get(k), v, `default of membit.${k}`);
});

test('readSettings falls back to defaults for values of the wrong type', () => {
  const s = readSettings((k) => ({ 'profile.steps': -3, 'hints.enabled': 'yes', targets: [{ host: 'gpu1' }, { nohost: 1 }], python: 7 } as Record<string, unknown>)[k]);
  assert.equal(s.profile.steps, DEFAULT_SETTINGS.profile.steps);
  assert.equal(s.hints.enabled, true);
  assert.deepEqual(s.targets, [{ host: 'gpu1' }]);
  assert.equal(s.python, '');
});

test('every overlay colour has light, dark and high-contrast defaults', () => {
  for (const c of pkg.contributes.colors) {
    assert.match(c.id, /^membit\./);
    for (const k of ['light', 'dark', 'highContrast'] as const) assert.ok(c.defaults[k], `${c.id}.${k}`);
  }
});
