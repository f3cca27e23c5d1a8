/**
 * Precision and recall per site kind over the labelled fixtures. Each fixture marks
 * the line where a site starts with `# expect: <kind>`; every other line must hold
 * no site. The table is printed so a regression shows which kind moved.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { notebookCells, scanNotebook, SITE_KINDS, type SiteKind } from '../../src/core/scan';
import { expectations, FIXTURES, fixture, scanner } from './scanSupport';
import { defined } from '../defined';

interface Tally {
  tp: number;
  fp: number;
  fn: number;
}

function take(list: string[], kind: string): boolean {
  const i = list.indexOf(kind);
  if (i < 0) return false;
  list.splice(i, 1);
  return true;
}

test('fixtures: every labelled site is found and nothing else (per-kind precision/recall = 100%)', async () => {
  const s = await scanner();
  const tally = new Map<SiteKind, Tally>(SITE_KINDS.map((k) => [k, { tp: 0, fp: 0, fn: 0 }]));
  const misses: string[] = [];
  const files = readdirSync(FIXTURES()).filter((f) => f.endsWith('.py') || f.endsWith('.ipynb')).sort();
  assert.ok(files.length >= 10, 'fixtures are missing');
  for (const f of files) {
    const text = fixture(f);
    // Expected and found, keyed by "cell:line" so notebooks compare per cell.
    const expected = new Map<string, string[]>();
    const found = new Map<string, string[]>();
    const lines = new Map<string, string>();
    if (f.endsWith('.ipynb')) {
      for (const c of notebookCells(text).cells) {
        for (const [l, kinds] of expectations(c.text)) expected.set(`${c.index}:${l}`, kinds);
        c.text.split('\n').forEach((t, l) => lines.set(`${c.index}:${l}`, t));
      }
      const r = scanNotebook(s, text, f);
      assert.equal(r.error, undefined, `${f}: ${r.error}`);
      for (const site of r.sites) {
        const k = `${site.cell}:${site.range.startLine}`;
        found.set(k, [...(found.get(k) ?? []), site.kind]);
      }
    } else {
      for (const [l, kinds] of expectations(text)) expected.set(`-:${l}`, kinds);
      text.split('\n').forEach((t, l) => lines.set(`-:${l}`, t));
      const r = s.scan(text, f);
      assert.equal(r.error, undefined, `${f}: ${r.error}`);
      for (const site of r.sites) {
        const k = `-:${site.range.startLine}`;
        found.set(k, [...(found.get(k) ?? []), site.kind]);
      }
    }
    for (const key of new Set([...expected.keys(), ...found.keys()])) {
      const exp = [...(expected.get(key) ?? [])];
      const got = [...(found.get(key) ?? [])];
      for (const kind of [...got]) {
        const t = defined(tally.get(kind as SiteKind), `${kind} tally`);
        if (take(exp, kind)) t.tp++;
        else {
          t.fp++;
          misses.push(`${f} ${key}: unexpected ${kind}: ${lines.get(key)?.trim()}`);
        }
      }
      for (const kind of exp) {
        const t = tally.get(kind as SiteKind);
        assert.ok(t, `${f} ${key}: unknown kind in marker: ${kind}`);
        t.fn++;
        misses.push(`${f} ${key}: missed ${kind}: ${lines.get(key)?.trim()}`);
      }
    }
  }
  const pct = (a: number, b: number) => (b === 0 ? '   -  ' : `${((100 * a) / b).toFixed(1).padStart(5)}%`);
  const rows = [...tally].map(([k, t]) => `  ${k.padEnd(20)} ${String(t.tp + t.fn).padStart(4)} ${String(t.tp).padStart(4)} ${String(t.fp).padStart(4)} ${String(t.fn).padStart(4)}   ${pct(t.tp, t.tp + t.fp)}   ${pct(t.tp, t.tp + t.fn)}`);
  console.log(`\nscanner fixtures (${files.length} files)\n  kind               label   tp   fp   fn   precision  recall\n${rows.join('\n')}`);
  for (const [k, t] of tally) assert.ok(t.tp + t.fn > 0, `no fixture labels ${k}`);
  assert.deepEqual(misses, []);
});
