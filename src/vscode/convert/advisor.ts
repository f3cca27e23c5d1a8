import * as vscode from 'vscode';
import { InternalCommands } from '../../commands';
import { ADVICE, adviceMarkdown, type AdviceTopic, applyLever, type Lever, LEVER_TITLES, type LeverResult, LEVERS, leversAt } from '../../core/rewrite';
import type { ScanResult, Site } from '../../core/scan';
import type { Handler } from '../commandTable';
import type { Log } from '../log';
import { notify } from '../notify';
import type { ScanFeature } from '../scan';
import { getSettings } from '../settings';
import { refuse, workspaceEditFor } from './edit';

/** The commands the advisor's code actions call (InternalCommands.applyLever and .showAdvice). */
export type AdvisorCommands = Readonly<Record<'applyLever' | 'showAdvice', Handler>>;

/** The advisor's part of a site (`site.advice` in the scanner's model), read structurally. */
interface SiteAdvice {
  lever?: string;
  unavailable?: string;
  docs?: string;
  requires?: string[];
}

function adviceOf(site: Site | undefined): SiteAdvice | undefined {
  return (site as { advice?: SiteAdvice } | undefined)?.advice;
}

/** Which lever rewrites what a diagnostic points at. An attention mask goes with its eager chain. */
const LEVER_OF: Readonly<Record<string, Lever>> = {
  'membit.eager-attn': 'sdpa',
  'membit.no-autocast': 'autocast',
  'membit.checkpoint': 'checkpoint',
  'membit.attn-mask': 'sdpa',
};
/** Codes of findings whose lever needs a torch feature (the scanner marks them unavailable). */
const CODES_OF: Readonly<Record<Lever, readonly string[]>> = {
  sdpa: ['membit.eager-attn'],
  autocast: ['membit.no-autocast'],
  checkpoint: ['membit.checkpoint'],
};
const ADVISOR_CODES = new Set([...Object.keys(LEVER_OF), 'membit.optimizer']);

const GENERIC_TITLE: Readonly<Record<Lever, string>> = {
  sdpa: LEVER_TITLES['sdpa-chain'],
  checkpoint: LEVER_TITLES['checkpoint-loop'],
  autocast: LEVER_TITLES.autocast,
};

const NOTEBOOK = 'the advisor rewrites .py files, not notebook cells: make the change by hand (Show advice explains it).';

function topicOf(code: string, site: Site | undefined): AdviceTopic {
  switch (code) {
    case 'membit.eager-attn':
      return 'sdpa';
    case 'membit.no-autocast':
      return 'autocast';
    case 'membit.checkpoint':
      return 'checkpoint';
    case 'membit.optimizer':
      return 'fused-optimizer';
    default:
      return adviceOf(site)?.lever === 'is-causal' || (site?.remedy ?? '').includes('is_causal') ? 'is-causal' : 'padding-mask';
  }
}

/** `scale=` in SDPA calls only where the scan knows the installed torch has it. */
function scaleAllowed(advice: SiteAdvice | undefined): boolean {
  return !!advice && !advice.unavailable && (advice.requires ?? []).includes('sdpa-scale');
}

/** A lever the installed torch lacks, as the scan reported it for this file. */
function unavailable(result: ScanResult | undefined, lever: Lever): string | undefined {
  for (const s of result?.sites ?? []) {
    const a = adviceOf(s);
    if (a?.unavailable && CODES_OF[lever].includes(s.code)) return a.unavailable;
  }
  return undefined;
}

/**
 * The memory advisor's code actions. On the advisor's diagnostics (`membit.eager-attn`,
 * `membit.no-autocast`, `membit.checkpoint`, and an attention mask inside an eager
 * chain) a quick fix applies the lever where `applyLever` proves the rewrite; where it
 * does not, the action is shown disabled with the reason. Every finding also gets
 * "Show advice" (an explanation and a docs link, no edit); the fused optimizer and
 * padding masks get only that. At the cursor, any lever that applies there is offered
 * as a refactoring, with or without a diagnostic. Applying is one undoable WorkspaceEdit,
 * recomputed from the document's text at that moment. Returns the handlers of the two
 * commands its actions call; the command table registers them.
 */
export function registerAdvisorActions(context: vscode.ExtensionContext, log: Log, scan: ScanFeature): AdvisorCommands {
  const pages = new AdvicePages();
  const leverAction = (doc: vscode.TextDocument, lever: Lever, line: number, r: LeverResult, kind: vscode.CodeActionKind, scaleKwarg: boolean, diag?: vscode.Diagnostic) => {
    const change = r.changes[0];
    const title = change ? LEVER_TITLES[change.form] : GENERIC_TITLE[lever];
    const a = new vscode.CodeAction(title, kind);
    a.command = { title, command: InternalCommands.applyLever, arguments: [doc.uri, lever, line, scaleKwarg] };
    if (diag) {
      a.diagnostics = [diag];
      a.isPreferred = true;
    }
    return a;
  };

  context.subscriptions.push(
    vscode.languages.registerCodeActionsProvider(
      { language: 'python' },
      {
        async provideCodeActions(doc, range, ctx) {
          const text = doc.getText();
          if (text.length > getSettings(doc.uri).scan.maxFileSizeKB * 1024) return [];
          const result = await scan.resultFor(doc);
          const actions: vscode.CodeAction[] = [];
          // One action per lever and pattern, whether a diagnostic or the cursor found it.
          const offered = new Set<string>();
          for (const d of ctx.diagnostics) {
            const code = d.code;
            if (d.source !== 'Membit' || typeof code !== 'string' || !ADVISOR_CODES.has(code)) continue;
            const line = d.range.start.line;
            const site = result?.sites.find((s) => s.code === code && s.range.startLine === line);
            const advice = adviceOf(site);
            const lever = LEVER_OF[code];
            let reason = advice?.unavailable;
            if (lever && !reason) {
              const scaleKwarg = scaleAllowed(advice);
              const r = await applyLever(text, lever, { line, scaleKwarg });
              const change = r.changes[0];
              if (change) {
                const key = `${lever}:${change.first}`;
                if (!offered.has(key)) {
                  offered.add(key);
                  actions.push(leverAction(doc, lever, line, r, vscode.CodeActionKind.QuickFix, scaleKwarg, d));
                }
              } else if (code !== 'membit.attn-mask') {
                reason = r.skipped[0]?.reason;
                const a = new vscode.CodeAction(GENERIC_TITLE[lever], vscode.CodeActionKind.QuickFix);
                a.diagnostics = [d];
                a.disabled = { reason: `Membit leaves this alone: ${reason ?? 'the pattern is not one it can rewrite exactly'}` };
                actions.push(a);
              }
            }
            const topic = topicOf(code, site);
            const title = `Show advice: ${ADVICE[topic].title}`;
            const explain = new vscode.CodeAction(title, vscode.CodeActionKind.QuickFix);
            explain.diagnostics = [d];
            explain.command = { title, command: InternalCommands.showAdvice, arguments: [topic, reason, advice?.docs, `${vscode.workspace.asRelativePath(doc.uri)}:${d.range.start.line + 1}`] };
            actions.push(explain);
          }
          // From the cursor: the levers whose pattern covers this line.
          if (range.start.line === range.end.line) {
            const line = range.start.line;
            const all = await leversAt(text, line);
            for (const lever of LEVERS) {
              const change = all[lever].changes[0];
              if (!change || offered.has(`${lever}:${change.first}`) || unavailable(result, lever)) continue;
              offered.add(`${lever}:${change.first}`);
              actions.push(leverAction(doc, lever, line, all[lever], vscode.CodeActionKind.RefactorRewrite, false));
            }
          }
          return actions;
        },
      },
      { providedCodeActionKinds: [vscode.CodeActionKind.QuickFix, vscode.CodeActionKind.RefactorRewrite] },
    ),
  );

  context.subscriptions.push(pages, vscode.workspace.registerTextDocumentContentProvider(ADVICE_SCHEME, pages));

  const applyLeverAt = async (uriArg: unknown, leverArg: unknown, lineArg: unknown, scaleArg: unknown) => {
    if (!(uriArg instanceof vscode.Uri) || !LEVERS.includes(leverArg as Lever) || typeof lineArg !== 'number') {
      throw new Error('the advisor action was called without a file, lever and line');
    }
    const lever = leverArg as Lever;
    const doc = await vscode.workspace.openTextDocument(uriArg);
    const why = refuse(doc, NOTEBOOK);
    if (why) {
      void notify.warn(`Membit: ${why}`);
      return undefined;
    }
    const r = await applyLever(doc.getText(), lever, { line: lineArg, scaleKwarg: scaleArg === true });
    const change = r.changes[0];
    if (!change) {
      void notify.info(`Membit: nothing rewritten: ${r.skipped[0]?.reason ?? 'the pattern is no longer there'}.`);
      return r;
    }
    const ok = await vscode.workspace.applyEdit(workspaceEditFor(doc.uri, r.edits));
    if (!ok) throw new Error(`the edit to ${vscode.workspace.asRelativePath(doc.uri)} could not be applied (the file changed?)`);
    log.info(`advisor: ${change.description} in ${doc.uri.fsPath}`);
    void notify.info(`Membit: ${change.description}${r.imports.length ? `; added \`${r.imports.join('`, `')}\`` : ''}. Undo restores the original.`);
    return r;
  };

  const showAdvice = async (topicArg: unknown, reasonArg: unknown, docsArg: unknown, whereArg: unknown) => {
    const topic = topicArg as AdviceTopic;
    if (!Object.hasOwn(ADVICE, topic)) throw new Error(`no advice on "${String(topicArg)}"`);
    const advice = ADVICE[topic];
    const docs = typeof docsArg === 'string' && /^https:\/\/[^\s()]+$/.test(docsArg) ? docsArg : advice.docs;
    const reason = typeof reasonArg === 'string' && reasonArg ? reasonArg : undefined;
    const where = typeof whereArg === 'string' && whereArg ? whereArg : undefined;
    const text = adviceMarkdown(topic, reason, docs, where);
    const uri = pages.put(topic, text);
    // Formatted, beside the code, and kept until closed: not a toast that hides the text.
    try {
      await vscode.commands.executeCommand('markdown.showPreviewToSide', uri);
    } catch {
      // Without the built-in Markdown extension the page opens as text.
      await vscode.window.showTextDocument(uri, { viewColumn: vscode.ViewColumn.Beside, preview: true });
    }
    return { text, docs, uri: uri.toString() };
  };

  return { applyLever: applyLeverAt, showAdvice };
}

const ADVICE_SCHEME = 'membit-advice';

/** Read-only advice pages, served from memory under membit-advice: (one per topic, the latest text). */
class AdvicePages implements vscode.TextDocumentContentProvider, vscode.Disposable {
  private readonly pages = new Map<string, string>();
  private readonly changed = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.changed.event;

  put(topic: string, text: string): vscode.Uri {
    const uri = vscode.Uri.from({ scheme: ADVICE_SCHEME, path: `/${topic}.md` });
    this.pages.set(uri.path, text);
    this.changed.fire(uri);
    return uri;
  }

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.pages.get(uri.path) ?? '';
  }

  dispose(): void {
    this.changed.dispose();
  }
}
