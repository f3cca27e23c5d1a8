/**
 * The report view's front end (runs in the webview; bundled for the browser with
 * chart.js). It draws what the extension sends and posts back user actions.
 */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
  type Plugin,
} from 'chart.js';
import { formatPct } from '../../src/core/report/compare';
import type { ReportView } from '../../src/core/report/view';
import { formatBytes } from '../../src/core/units';
import { formatStepTime, stepStats } from '../../src/core/report/stepTime';
import { groupLabel, type Segment } from '../../src/core/report/layers';
import type { LeverRow } from '../../src/core/report/levers';
import type { SiteState } from '../../src/core/report/siteState';
import type { FromWebview, RenderedSummary, ShowMessage, ToWebview } from './messages';

Chart.register(LineController, LineElement, PointElement, BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip, Filler);

declare function acquireVsCodeApi(): { postMessage(m: FromWebview): void; getState(): unknown; setState(s: unknown): void };
const vscode = acquireVsCodeApi();
const charts: Chart[] = [];
const rendered: RenderedSummary = { charts: [], tables: {}, peakText: '' };

function css(name: string, fallback: string): string {
  return getComputedStyle(document.body).getPropertyValue(name).trim() || fallback;
}

const palette = () => ({
  fg: css('--vscode-foreground', '#ccc'),
  grid: css('--vscode-editorWidget-border', '#444'),
  blue: css('--vscode-charts-blue', '#3794ff'),
  orange: css('--vscode-charts-orange', '#d18616'),
  green: css('--vscode-charts-green', '#89d185'),
  red: css('--vscode-charts-red', '#f14c4c'),
  purple: css('--vscode-charts-purple', '#b180d7'),
  yellow: css('--vscode-charts-yellow', '#cca700'),
});

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function section(title: string, id: string): HTMLElement {
  const s = el('section', { id });
  s.append(el('h2', {}, title));
  document.getElementById('root')?.append(s);
  return s;
}

function table(id: string, head: string[], rows: (string | Node)[][]): HTMLTableElement {
  const t = el('table', { id });
  t.append(el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))));
  const body = el('tbody');
  for (const r of rows) body.append(el('tr', {}, ...r.map((c) => el('td', {}, c))));
  t.append(body);
  rendered.tables[id] = rows.length;
  return t;
}

function frameLink(file: string, line: number, label?: string): HTMLAnchorElement {
  const a = el('a', { href: '#', class: 'frame' }, label ?? `${file}:${line}`);
  a.addEventListener('click', (ev) => {
    ev.preventDefault();
    vscode.postMessage({ command: 'open', file, line });
  });
  return a;
}

/** Shades forward/backward/optimizer spans behind the timeline and marks the peak. */
const phasePlugin = (v: ReportView): Plugin<'line'> => ({
  id: 'membitPhases',
  beforeDatasetsDraw(chart) {
    const { ctx, chartArea, scales } = chart;
    const x = scales['x'];
    if (!x) return;
    const colors: Record<string, string> = { forward: 'rgba(55,148,255,0.10)', backward: 'rgba(209,134,22,0.12)', optimizer: 'rgba(137,209,133,0.14)' };
    ctx.save();
    for (const p of v.timeline.phases) {
      const c = colors[p.phase];
      if (!c) continue;
      const x0 = x.getPixelForValue(p.start_ms);
      const x1 = x.getPixelForValue(p.end_ms);
      ctx.fillStyle = c;
      ctx.fillRect(x0, chartArea.top, Math.max(1, x1 - x0), chartArea.bottom - chartArea.top);
    }
    const pk = v.timeline.peak;
    if (pk) {
      ctx.strokeStyle = palette().red;
      ctx.setLineDash([4, 3]);
      const px = x.getPixelForValue(pk.t_ms);
      ctx.beginPath();
      ctx.moveTo(px, chartArea.top);
      ctx.lineTo(px, chartArea.bottom);
      ctx.stroke();
    }
    ctx.restore();
  },
});

function renderSummary(v: ReportView): void {
  const s = v.summary;
  const sec = section(`Summary — ${v.label}`, 'summary');
  const status = v.run.status === 'ok' ? '' : ` · ${v.run.status.toUpperCase()}${v.run.error ? `: ${v.run.error.split('\n').slice(-1)[0]}` : ''}`;
  const cpu = s.peak_allocated === null;
  rendered.peakText = `peak ${formatBytes(v.peakBytes)}`;
  sec.append(
    el('p', { class: 'headline' }, `Peak ${formatBytes(v.peakBytes)}${cpu ? ' named by the harness' : ''}${v.timeline.peak ? ` at ${(v.timeline.peak.t_ms / 1000).toFixed(2)} s` : ''}${status}`),
    el('p', { class: 'meta' }, `${v.run.script} · variant ${v.run.variant} · ${v.run.device.name} · torch ${v.run.torch} · ${v.run.steps} steps · ${v.run.started}`),
  );
  if (v.source) {
    renderSnapshotSummary(v, sec);
    return;
  }
  const cat: [string, number | null][] = [
    ['parameters', s.params_at_peak],
    ['buffers', s.buffers_at_peak],
    ['gradients', s.grads_at_peak],
    ['optimizer state', s.optimizer_state_at_peak],
    ['activations', s.activations_at_peak],
    ['masks', s.masks_at_peak],
    ['unattributed', s.unattributed_at_peak],
    ['allocated (peak)', s.peak_allocated],
    ['reserved (peak)', s.peak_reserved],
    ['device used (peak)', s.device_used_peak],
    // What NVML sees beyond PyTorch's allocator: CUDA context, cuBLAS/cuDNN workspaces, NCCL buffers.
    ['outside PyTorch (device used − reserved)', s.device_used_peak !== null && s.peak_reserved !== null ? Math.max(0, s.device_used_peak - s.peak_reserved) : null],
  ];
  if (cpu) sec.append(el('p', { class: 'meta' }, 'CPU run: PyTorch keeps no allocator record on CPU, so the peak is what the harness could name (parameters, gradients, optimizer state and tensors saved for backward).'));
  sec.append(table('summary-table', ['at the peak', 'bytes'], cat.flatMap(([k, b]) => (b === null ? [] : [[k, formatBytes(b)]]))));
  if (s.step_time_s !== null) sec.append(el('p', { id: 'step-time' }, `Step time ${formatStepTime(stepStats(s.step_times_s), s.step_time_s)}${s.samples_per_s !== null ? ` · ${s.samples_per_s.toFixed(1)} samples/s` : ''}`));
}

/**
 * A memory snapshot's summary: only what the allocator's record says. Categories are
 * named only where the frames make them certain; the rest is unattributed.
 */
function renderSnapshotSummary(v: ReportView, sec: HTMLElement): void {
  const src = v.source;
  if (!src) return;
  const s = v.summary;
  sec.append(
    el('p', { class: 'meta', id: 'snapshot-source' }, `From the PyTorch memory snapshot ${src.files.join(', ')}${src.rank !== null && src.rank !== undefined ? ` (rank ${src.rank})` : ''} · ${v.run.device.name} · ${(src.entries ?? 0).toLocaleString()} trace entries · stacks: ${src.stacks ?? 'none'}${src.history ? '' : ' · no allocation history: the figures are the memory at the dump'}`),
  );
  const cat: [string, number | null][] = [['optimizer state (Adam/SGD state from _init_group)', s.optimizer_state_at_peak]];
  if (src.stacks === 'all') cat.push(['gradients (AccumulateGrad)', s.grads_at_peak]);
  cat.push(['unattributed', s.unattributed_at_peak], ['allocated (peak)', s.peak_allocated], ['reserved (peak)', s.peak_reserved]);
  sec.append(table('summary-table', ['at the peak', 'bytes'], cat.flatMap(([k, b]) => (b === null ? [] : [[k, formatBytes(b)]]))));
  for (const n of v.run.notes) sec.append(el('p', { class: 'meta' }, n));
  const lines = el('section', { id: 'snapshot-lines' });
  lines.append(el('h3', {}, 'Lines whose allocations were live at the peak (innermost workspace frame)'));
  lines.append(
    table(
      'lines-table',
      ['line', 'live at peak', 'function'],
      v.lines.slice(0, 30).map((l) => [frameLink(l.file, l.line), formatBytes(l.saved_bytes), l.func]),
    ),
  );
  sec.append(lines);
}

/** Segments at the dump: reserved, allocated and reserved-but-free per segment (fragmentation). */
function renderSegments(v: ReportView): void {
  const g = v.segments;
  if (!g) return;
  const sec = section('Segments at the dump (fragmentation)', 'segments');
  const pct = g.reserved ? ((g.free / g.reserved) * 100).toFixed(1) : '0';
  sec.append(el('p', {}, `${g.count} segments reserve ${formatBytes(g.reserved)}: ${formatBytes(g.allocated)} allocated in blocks (${formatBytes(g.requested)} asked for), ${formatBytes(g.free)} reserved but free (${pct}%); the largest free block is ${formatBytes(g.largest_free)}.`));
  sec.append(
    table(
      'segments-table',
      ['segment', 'stream', 'pool', 'reserved', 'allocated', 'free', 'largest free', 'blocks'],
      g.items.slice(0, 100).map((x) => [`0x${x.address.toString(16)}`, String(x.stream), x.type, formatBytes(x.total), formatBytes(x.allocated), formatBytes(x.free), formatBytes(x.largest_free), String(x.blocks)]),
    ),
  );
}

function renderOomEvents(v: ReportView): void {
  if (v.oomEvents.length < 2) return;
  const sec = section(`Out-of-memory events (${v.oomEvents.length})`, 'oom-events');
  sec.append(
    table(
      'oom-events-table',
      ['at', 'asked for', 'allocated', 'reserved', 'where'],
      v.oomEvents.map((e) => [e.t_ms === null ? '—' : `${(e.t_ms / 1000).toFixed(3)} s`, formatBytes(e.requested_bytes), formatBytes(e.allocated), formatBytes(e.reserved), e.frames[0] ? frameLink(e.frames[0].file, e.frames[0].line) : '—']),
    ),
  );
}

function renderTimeline(v: ReportView): void {
  const sec = section('Memory over time', 'timeline');
  if (v.timeline.t_ms.length === 0) {
    sec.append(el('p', { class: 'meta' }, v.source ? 'No timeline: the snapshot was dumped without torch.cuda.memory._record_memory_history.' : 'No timeline: the allocator history is recorded on CUDA runs only.'));
    return;
  }
  const canvas = el('canvas', { id: 'timeline-chart', height: '110' });
  const holders = el('div', { id: 'holders' });
  sec.append(canvas, holders);
  const p = palette();
  const xy = (ys: (number | null)[]) => v.timeline.t_ms.map((t, i) => ({ x: t, y: ys[i] ?? null }));
  const datasets = [
    { label: 'allocated', data: xy(v.timeline.allocated), borderColor: p.blue, backgroundColor: p.blue, pointRadius: 0, borderWidth: 1.5 },
  ];
  if (v.timeline.reserved.length) datasets.push({ label: 'reserved', data: xy(v.timeline.reserved), borderColor: p.orange, backgroundColor: p.orange, pointRadius: 0, borderWidth: 1 });
  if (v.timeline.device_used.some((d) => d !== null)) datasets.push({ label: 'device used', data: xy(v.timeline.device_used), borderColor: p.purple, backgroundColor: p.purple, pointRadius: 0, borderWidth: 1 });
  const chart = new Chart(canvas, {
    type: 'line',
    data: { datasets: datasets as never },
    options: {
      animation: false,
      parsing: false,
      normalized: true,
      interaction: { mode: 'nearest', axis: 'x', intersect: false },
      scales: {
        x: { type: 'linear', title: { display: true, text: 'ms', color: p.fg }, ticks: { color: p.fg }, grid: { color: p.grid } },
        y: { ticks: { color: p.fg, callback: (val) => formatBytes(Number(val)) }, grid: { color: p.grid } },
      },
      plugins: { legend: { labels: { color: p.fg } }, tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${formatBytes(Number(c.parsed.y))}` } } },
      onClick: (_e, els) => {
        const i = els[0]?.index;
        const t = i === undefined ? undefined : v.timeline.t_ms[i];
        const bytes = i === undefined ? undefined : v.timeline.allocated[i];
        if (t === undefined || bytes === undefined) return;
        showHolders(v, holders, t, bytes);
      },
    },
    plugins: [phasePlugin(v)],
  });
  charts.push(chart);
  rendered.charts.push('timeline');
  if (v.timeline.peak) showHolders(v, holders, v.timeline.peak.t_ms, v.timeline.peak.bytes);
}

function showHolders(v: ReportView, box: HTMLElement, t: number, bytes: number): void {
  box.replaceChildren();
  const atPeak = v.timeline.peak && Math.abs(v.timeline.peak.t_ms - t) < 1e-6;
  box.append(el('h3', {}, `${formatBytes(bytes)} allocated at ${(t / 1000).toFixed(3)} s${atPeak ? ' (peak)' : ''}${atPeak && v.source ? ' — largest blocks, unattributed unless their frames say what they are' : ''}`));
  if (!atPeak) {
    box.append(el('p', { class: 'meta' }, 'Holders with stacks are recorded at the peak; click the dashed line to see them.'));
    return;
  }
  box.append(holderTable('peak-holders', v.peakTop));
}

function holderTable(id: string, top: ReportView['peakTop']): HTMLTableElement {
  return table(
    id,
    ['bytes', 'category', 'where'],
    top.map((h) => {
      const where = el('div');
      for (const f of h.frames.slice(0, 4)) {
        where.append(frameLink(f.file, f.line, `${f.name} — ${f.file}:${f.line}`), el('br'));
      }
      return [formatBytes(h.bytes), h.category, where];
    }),
  );
}

function renderModules(v: ReportView): void {
  const sec = section('Per layer', 'modules');
  const { groups, segments, omitted } = v.layers;
  if (!groups.length) {
    sec.append(el('p', { class: 'meta' }, 'No module data in this report.'));
    return;
  }
  const cpu = v.summary.peak_allocated === null;
  sec.append(
    el(
      'p',
      { class: 'meta' },
      `Each bar is what a layer holds itself (its children have their own bars), summed over identical layers (×N). Drawn: ${segments.join(', ')} — the kinds of memory held at the peak${cpu ? '; CPU run: bytes per element as on CPU' : ''}.${omitted ? ` ${omitted} smaller layer groups are not drawn.` : ''}`,
    ),
  );
  // The figure is in every bar's label, so nothing needs an axis that scrolled out of sight.
  rendered.layers = groups.map((g) => `${groupLabel(g)} — ${formatBytes(g.total)}`);
  // Two lines per bar (path, then class and figure), so a narrow view does not cut the names.
  const labels = groups.map((g) => [`${g.path}${g.count > 1 ? ` ×${g.count}` : ''}`, `${g.type} — ${formatBytes(g.total)}`]);
  rendered.segments = [...segments];
  const wrap = el('div', { class: 'chart-scroll' });
  const canvas = el('canvas', { id: 'modules-chart', height: String(Math.max(80, groups.length * 24)) });
  wrap.append(canvas);
  sec.append(wrap);
  const p = palette();
  const colors: Record<Segment, string> = { params: p.blue, grads: p.purple, activations: p.orange, masks: p.red };
  const names: Record<Segment, string> = { params: 'parameters', grads: 'gradients', activations: 'saved activations', masks: 'masks' };
  charts.push(
    new Chart(canvas, {
      type: 'bar',
      data: { labels, datasets: segments.map((s) => ({ label: names[s], data: groups.map((g) => g[s]), backgroundColor: colors[s] })) },
      options: {
        animation: false,
        indexAxis: 'y',
        scales: {
          x: { stacked: true, position: 'top', ticks: { color: p.fg, callback: (val) => formatBytes(Number(val)) }, grid: { color: p.grid } },
          y: { stacked: true, ticks: { color: p.fg, autoSkip: false, font: { size: 11 } }, grid: { display: false } },
        },
        plugins: { legend: { labels: { color: p.fg } }, tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${formatBytes(Number(c.parsed.x))}` } } },
      },
    }),
  );
  rendered.charts.push('modules');
  sec.append(
    table(
      'lines-table',
      ['line', 'saved for backward', 'masks', 'module'],
      v.lines.slice(0, 30).map((l) => [frameLink(l.file, l.line), formatBytes(l.saved_bytes), formatBytes(l.mask_bytes), l.module ?? '']),
    ),
  );
}

/** Every lever, measured or estimated, largest saving first. */
function renderLevers(rows: readonly LeverRow[]): void {
  if (!rows.length) return;
  const sec = section('Levers, largest saving first', 'levers');
  const saved = (r: LeverRow) => (r.savedBytes === null ? '?' : r.savedBytes < 0 ? `costs ${formatBytes(-r.savedBytes)}` : formatBytes(r.savedBytes));
  const pct = (r: LeverRow) => (r.share === null ? '' : `${(Math.abs(r.share) * 100).toFixed(1)}% of peak`);
  rendered.levers = rows.map((r) => `${r.title}: ${saved(r)} (${r.basis})`);
  sec.append(
    table(
      'levers-table',
      ['lever', 'at the peak', 'share', 'basis', 'where', 'note'],
      rows.map((r) => [r.title, saved(r), pct(r), r.basis, r.where ? frameLink(r.where.file, r.where.line) : '', r.note ?? '']),
    ),
  );
}

function renderSites(v: ReportView, states: readonly SiteState[]): void {
  const sec = section('What converting would save', 'sites');
  if (!v.sites.length) {
    sec.append(el('p', { class: 'meta' }, 'No dropout or mask sites were measured in this run.'));
    return;
  }
  const total = v.sites.reduce((a, s) => a + s.saving_if_packed, 0);
  if (v.sitesTotal > v.sites.length) sec.append(el('p', { class: 'meta' }, `The ${v.sites.length} sites with the largest saving of ${v.sitesTotal}.`));
  sec.append(el('p', {}, `Packing every mask would save ${formatBytes(total)} (${((total / Math.max(1, v.peakBytes)) * 100).toFixed(1)}% of peak).`));
  const box = el('div', { id: 'sites-box' });
  sec.append(box);
  fillSites(v, states);
}

/** The sites table, where each site is now: links follow edits, converted sites say so. */
function fillSites(v: ReportView, states: readonly SiteState[]): void {
  const box = document.getElementById('sites-box');
  if (!box) return;
  const edited = states.some((s) => s.edited);
  const rows = v.sites.map((s, i) => {
    const st = states[i];
    const line = st ? st.line : s.line;
    let action: Node;
    let kind: 'convert' | 'converted' | 'gone';
    if (st?.converted) {
      kind = 'converted';
      action = el('span', { class: 'meta' }, 'converted — profile again to measure');
    } else if (line === null) {
      kind = 'gone';
      action = el('span', { class: 'meta' }, 'line removed since the run');
    } else {
      kind = 'convert';
      const b = el('button', {}, 'Convert');
      b.addEventListener('click', () => vscode.postMessage({ command: 'convert', file: s.file, line, kind: s.kind, module: s.module }));
      action = b;
    }
    // What to do and what it saves first, so a narrow view still shows them.
    return { cells: [line === null ? `${s.file}:${s.line} (removed)` : frameLink(s.file, line), action, formatBytes(s.saving_if_packed), formatBytes(s.mask_bytes), s.kind, s.module ?? '', s.elements.toLocaleString()], line, kind };
  });
  rendered.sites = rows.map((r) => ({ line: r.line, action: r.kind }));
  box.replaceChildren(
    ...(edited ? [el('p', { class: 'meta' }, 'The code was edited since this run: lines are where the sites are now; figures are the run\'s.')] : []),
    table('sites-table', ['site', '', 'saving if packed', 'mask', 'kind', 'module', 'elements'], rows.map((r) => r.cells)),
  );
}

function renderFfn(v: ReportView): void {
  if (!v.ffn.length) return;
  const sec = section('2:4 sparsity: would it be faster here?', 'ffn');
  const first = v.ffn.find((f) => f.advice);
  sec.append(
    el(
      'p',
      { class: 'meta' },
      first?.advice
        ? `Measured dense vs 2:4 FFN training speed for each block's widths and tokens per step (${first.advice.basis.replace(/^.*?, on /, 'on ')}).`
        : 'No 2:4 speed table is available for these shapes.',
    ),
  );
  sec.append(
    table(
      'ffn-table',
      ['FFN', 'widths', 'tokens/step', 'dtype', 'now', '2:4 speed'],
      v.ffn.map((f) => [
        f.created_at ? frameLink(f.created_at.file, f.created_at.line, f.module) : f.module,
        `${f.d_model}→${f.d_ff}${f.gated ? ' gated' : ''}`,
        f.tokens === null ? '?' : f.tokens.toLocaleString(),
        f.dtype ?? '?',
        f.converted ? '2:4' : 'dense',
        f.advice ? f.advice.text.replace(/^2:4 here: /, '') : '—',
      ]),
    ),
  );
}

function renderOom(v: ReportView): void {
  if (!v.oom) return;
  const sec = section('Out of memory — post-mortem', 'oom');
  const o = v.oom;
  sec.append(el('p', { class: 'error' }, o.message));
  if (v.source) {
    const at = v.run.error_at;
    sec.append(el('p', {}, 'Failed asking for ', o.requested_bytes === null ? 'an unknown size' : formatBytes(o.requested_bytes), at ? ' at ' : '', ...(at ? [frameLink(at.file, at.line)] : [])));
  } else sec.append(el('p', {}, `Failed in step ${o.step} (${o.phase}) asking for ${o.requested_bytes === null ? 'an unknown size' : formatBytes(o.requested_bytes)}; allocated ${o.allocated === null ? '?' : formatBytes(o.allocated)} of ${o.device_total === null ? '?' : formatBytes(o.device_total)}.`));
  sec.append(el('h3', {}, 'Lines holding the most at the failure'));
  sec.append(table('oom-lines', ['line', 'bytes'], o.lines.map((l) => [frameLink(l.file, l.line), formatBytes(l.bytes)])));
  sec.append(el('h3', {}, 'Largest blocks alive at the failure'));
  sec.append(holderTable('oom-holders', o.top));
}

function renderFlipRate(v: ReportView): void {
  if (!v.flipRate) return;
  const sec = section('2:4 mask flip rate', 'flip-rate');
  const canvas = el('canvas', { id: 'flip-chart', height: '80' });
  sec.append(canvas);
  const p = palette();
  const colors = [p.blue, p.orange, p.green, p.red, p.purple, p.yellow];
  charts.push(
    new Chart(canvas, {
      type: 'line',
      data: { labels: v.flipRate.step, datasets: v.flipRate.series.map((s, i) => ({ label: s.name, data: s.values, borderColor: colors[i % colors.length], pointRadius: 0, borderWidth: 1 })) },
      options: { animation: false, scales: { x: { ticks: { color: p.fg } }, y: { ticks: { color: p.fg } } }, plugins: { legend: { labels: { color: p.fg } } } },
    }),
  );
  rendered.charts.push('flip-rate');
}

function renderComparison(msg: ShowMessage): void {
  if (!msg.comparison || msg.comparison.rows.length < 2) return;
  const sec = section('Comparison', 'comparison');
  sec.append(
    table(
      'comparison-table',
      ['run', 'variant', 'status', 'peak', 'Δpeak', 'step time', 'Δstep', 'samples/s', 'Δsamples/s'],
      msg.comparison.rows.map((r) => [
        r.label, r.variant, r.status, formatBytes(r.peak), formatPct(r.dPeak),
        r.stepText, r.dStepText,
        r.samplesPerS === null ? '—' : r.samplesPerS.toFixed(1), r.dSamplesText,
      ]),
    ),
  );
  const how = msg.comparison.rows.flatMap((r) => [
    ...r.levers.map((l) => `${r.label} — ${l}`),
    ...(r.approximate.length ? [`${r.label} — ran rewritten source: line figures approximate in ${r.approximate.join('; ')}`] : []),
  ]);
  if (how.length) sec.append(el('ul', { id: 'comparison-levers' }, ...how.map((t) => el('li', {}, t))));
  if (msg.markdown) {
    const b = el('button', { id: 'copy-markdown' }, 'Copy as Markdown');
    const md = msg.markdown;
    b.addEventListener('click', () => vscode.postMessage({ command: 'copy', text: md }));
    sec.append(b);
  }
  const mods = msg.comparison.modules.slice(0, 30);
  if (mods.length) {
    sec.append(el('h3', {}, 'Per-layer differences (saved for backward)'));
    sec.append(table('comparison-modules', ['module', ...msg.comparison.rows.map((r) => r.label)], mods.map((m) => [m.path, ...m.bytes.map((b) => (b === null ? '—' : formatBytes(b)))])));
  }
}

/** A run set: the rank picker, per-rank peaks side by side with the imbalance, overlaid per-rank timelines. */
function renderRanks(msg: ShowMessage): void {
  const set = msg.ranks;
  if (!set) return;
  const { info, pick } = set;
  rendered.rankPick = pick;
  const sec = section(`Ranks — ${info.launcher}, ${info.world_size} rank${info.world_size === 1 ? '' : 's'}`, 'ranks');
  const p = palette();
  const picker = el('select', { id: 'rank-picker', 'aria-label': 'Rank shown here and in the editor' });
  picker.append(el('option', { value: 'max' }, 'max over ranks'));
  for (const r of info.ranks) {
    const o = el('option', { value: String(r.rank) }, `rank ${r.rank}${r.host ? ` · ${r.host}` : ''} · ${r.status}`);
    if (r.status === 'missing') o.setAttribute('disabled', '');
    picker.append(o);
  }
  picker.value = pick === null ? 'max' : String(pick);
  picker.addEventListener('change', () => vscode.postMessage({ command: 'pickRank', rank: picker.value === 'max' ? null : Number(picker.value) }));
  sec.append(el('p', {}, 'Show: ', picker, pick === null ? ' — each line shows the most any rank held there, naming the rank.' : ` — rank ${pick}'s own figures.`));
  const pk = info.peaks;
  const facts: string[] = [];
  if (pk.max && pk.min && pk.imbalance !== undefined) {
    // Equal peaks have no highest and lowest rank to name.
    facts.push(
      pk.max.peak === pk.min.peak
        ? `Every rank peaked at ${formatBytes(pk.max.peak)}: no imbalance.`
        : `Peak ${formatBytes(pk.max.peak)} on rank ${pk.max.rank}, lowest ${formatBytes(pk.min.peak)} on rank ${pk.min.rank}: imbalance ${formatPct(pk.imbalance)} (max / mean − 1).`,
    );
  }
  if (pk.firstOom) facts.push(`Rank ${pk.firstOom.rank}${pk.firstOom.host ? ` on ${pk.firstOom.host}` : ''} ran out of memory first.`);
  if (info.status !== 'ok' && info.message) facts.push(`Job ${info.status}: ${info.message}`);
  for (const f of facts) sec.append(el('p', { class: 'headline' }, f));
  const named = info.ranks.some((r) => r.named);
  if (named) sec.append(el('p', { class: 'meta' }, 'CPU ranks: each peak is what the harness named (no allocator record on CPU).'));
  const canvas = el('canvas', { id: 'rank-peaks-chart', height: '90' });
  sec.append(canvas);
  const colors = info.ranks.map((r) => (r.status === 'oom' ? p.red : pick !== null && r.rank === pick ? p.orange : p.blue));
  charts.push(new Chart(canvas, {
    type: 'bar',
    data: { labels: info.ranks.map((r) => `rank ${r.rank}`), datasets: [{ label: named ? 'peak (named)' : 'peak allocated', data: info.ranks.map((r) => r.peak ?? 0), backgroundColor: colors }] },
    options: {
      animation: false,
      scales: { x: { ticks: { color: p.fg }, grid: { color: p.grid } }, y: { ticks: { color: p.fg, callback: (val) => formatBytes(Number(val)) }, grid: { color: p.grid } } },
      plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => formatBytes(Number(c.parsed.y)) } } },
      onClick: (_e, els) => {
        const i = els[0]?.index;
        const r = i === undefined ? undefined : info.ranks[i];
        if (r && r.status !== 'missing') vscode.postMessage({ command: 'pickRank', rank: r.rank });
      },
    },
  }));
  rendered.charts.push('rank-peaks');
  const b = (x: number | null) => (x === null ? '—' : formatBytes(x));
  sec.append(table('ranks-table', ['rank', 'host', 'device', 'status', 'peak', 'params', 'grads', 'optimizer', 'unsharded max', 'DDP buckets', 'outside allocator'],
    info.ranks.map((r) => [String(r.rank), r.host ?? '?', r.device ?? '?', r.status, b(r.peak), b(r.params), b(r.grads), b(r.optimizer_state), b(r.unsharded_params_max), b(r.ddp_buckets), b(r.outside_allocator)])));
  if (info.timelines.length) {
    const tl = el('canvas', { id: 'rank-timelines-chart', height: '110' });
    const source = info.timelines.every((t) => t.source === 'steps') ? 'peak so far at each step (CPU: no allocator timeline)' : 'allocated (allocator history)';
    sec.append(el('h3', {}, `Per-rank memory over time — ${source}`), tl);
    const hues = [p.blue, p.orange, p.green, p.red, p.purple, p.yellow];
    charts.push(new Chart(tl, {
      type: 'line',
      data: {
        datasets: info.timelines.map((t, i) => ({
          label: `rank ${t.rank}`,
          data: t.t_ms.map((x, j) => ({ x, y: t.bytes[j] ?? null })),
          borderColor: hues[i % hues.length],
          backgroundColor: hues[i % hues.length],
          pointRadius: t.source === 'steps' ? 2 : 0,
          borderWidth: pick !== null && t.rank === pick ? 3 : 1.2,
        })) as never,
      },
      options: {
        animation: false,
        parsing: false,
        scales: {
          x: { type: 'linear', title: { display: true, text: 'ms', color: p.fg }, ticks: { color: p.fg }, grid: { color: p.grid } },
          y: { ticks: { color: p.fg, callback: (val) => formatBytes(Number(val)) }, grid: { color: p.grid } },
        },
        plugins: { legend: { labels: { color: p.fg } }, tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${formatBytes(Number(c.parsed.y))}` } } },
      },
    }));
    rendered.charts.push('rank-timelines');
  }
}

let shown: ReportView | undefined;

function render(msg: ShowMessage): void {
  // A redraw of the same reports (a rank picked) keeps the reader's place; a command's focus moves it.
  const keepY = window.scrollY;
  for (const c of charts.splice(0)) c.destroy();
  rendered.charts = [];
  rendered.tables = {};
  delete rendered.layers;
  delete rendered.segments;
  delete rendered.sites;
  delete rendered.levers;
  delete rendered.focused;
  delete rendered.rankPick;
  document.getElementById('root')?.replaceChildren();
  const v = msg.views[0];
  shown = v;
  if (!v) return;
  renderRanks(msg);
  renderSummary(v);
  renderComparison(msg);
  if (!v.source) renderLevers(msg.levers ?? []);
  renderOom(v);
  renderOomEvents(v);
  renderTimeline(v);
  renderSegments(v);
  if (!v.source) renderModules(v);
  renderSites(v, msg.sites ?? []);
  renderFfn(v);
  renderFlipRate(v);
  const target = msg.focus ? document.getElementById(msg.focus) : null;
  if (target) {
    target.scrollIntoView({ block: 'start' });
    rendered.focused = { id: target.id, top: Math.round(target.getBoundingClientRect().top) };
  } else {
    window.scrollTo(0, keepY);
    rendered.focused = null;
  }
  vscode.postMessage({ command: 'rendered', summary: rendered });
}

window.addEventListener('message', (e: MessageEvent) => {
  const msg = e.data as ToWebview | null | undefined;
  if (msg?.type === 'show' && Array.isArray(msg.views)) {
    vscode.setState({ uris: msg.uris });
    render(msg);
  } else if (msg?.type === 'sites' && Array.isArray(msg.states) && shown) {
    fillSites(shown, msg.states);
    vscode.postMessage({ command: 'rendered', summary: rendered });
  }
});
vscode.postMessage({ command: 'ready' });
