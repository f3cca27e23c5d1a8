import * as vscode from 'vscode';
import { Commands, type CommandId } from '../../commands';
import { canConvert, convertAll, insertPatchCall, revertAll, sitesIn, type ConvertOptions, type ConvertResult } from '../../core/rewrite';
import type { Features } from '../commandTable';
import type { Log } from '../log';
import { notify } from '../notify';
import type { ScanFeature } from '../scan';
import { refuse as refuseEdit, toRange, workspaceEditFor } from './edit';

const DROPOUT_CODES = new Set(['membit.dropout', 'membit.dropout-call', 'membit.attn-dropout']);
/** Lines that build a model: where "insert membit.patch(model)" is offered. */
const MODEL_LINE = /^\s*([A-Za-z_][\w.]*)\s*=\s*[\w.]+(?:\.from_pretrained|\.from_config)?\(/;
const MODEL_NAME = /model|net|gpt|bert|vit|transformer/i;

const NOTEBOOK = 'converting inside notebooks is not supported yet; add `membit.patch(model, dropout="packed")` in a cell instead (Membit: Insert membit.patch).';

/** Why a document cannot be edited by a conversion, or undefined when it can. */
function refuse(doc: vscode.TextDocument): string | undefined {
  return refuseEdit(doc, NOTEBOOK);
}

function skippedText(r: ConvertResult): string {
  const reasons = [...new Set(r.skipped.filter((s) => s.code !== 'not-a-target').map((s) => `line ${s.site.range.startLine + 1}: ${s.reason}`))];
  return reasons.length ? ` Left alone: ${reasons.slice(0, 3).join('; ')}${reasons.length > 3 ? ` (+${reasons.length - 3} more)` : ''}.` : '';
}

/**
 * Code actions and commands that rewrite model code: packed or mask-free dropout for a
 * site, a selection, a file or the workspace; `membit.patch(model)` for code the user
 * does not want to touch; and reverting. Every edit is one undoable WorkspaceEdit, built
 * from a fresh scan so a site that changed since the last scan is re-validated.
 * Returns the commands' handlers; the command table registers them.
 */
export function registerConvertFeature(context: vscode.ExtensionContext, log: Log, scan: ScanFeature): Features['convert'] {
  context.subscriptions.push(
    vscode.languages.registerCodeActionsProvider(
      { language: 'python' },
      {
        async provideCodeActions(doc, range, ctx) {
          const result = await scan.resultFor(doc);
          if (!result) return [];
          const actions: vscode.CodeAction[] = [];
          const fix = (title: string, kind: vscode.CodeActionKind, command: CommandId, args: unknown[], diag?: vscode.Diagnostic) => {
            const a = new vscode.CodeAction(title, kind);
            a.command = { title, command, arguments: args };
            if (diag) a.diagnostics = [diag];
            actions.push(a);
            return a;
          };
          for (const d of ctx.diagnostics) {
            if (d.source !== 'Membit' || typeof d.code !== 'string' || !DROPOUT_CODES.has(d.code)) continue;
            const line = d.range.start.line;
            const site = result.sites.find((s) => s.range.startLine === line && s.code === d.code);
            if (!site || !canConvert(site).ok) continue;
            fix('Convert to packed dropout (1 bit per element)', vscode.CodeActionKind.QuickFix, Commands.convertToPackedDropout, [doc.uri, line], d).isPreferred = true;
            fix('Convert to mask-free dropout (recompute, no mask stored)', vscode.CodeActionKind.QuickFix, Commands.convertToRecomputeDropout, [doc.uri, line], d);
          }
          for (const d of ctx.diagnostics) {
            if (d.source !== 'Membit' || d.code !== 'membit.ffn') continue;
            const site = result.sites.find((s) => s.range.startLine === d.range.start.line && s.code === d.code);
            if (!site || !canConvert(site).ok) continue;
            fix('Convert FFN to 2:4 sparse (SparseLinear24)', vscode.CodeActionKind.QuickFix, Commands.convertFfnToSparse24, [doc.uri, d.range.start.line], d);
          }
          const sel = { startLine: range.start.line, startCol: range.start.character, endLine: range.end.line, endCol: range.end.character };
          const inSel = sitesIn(result.sites, sel).filter((s) => DROPOUT_CODES.has(s.code) && canConvert(s).ok);
          if (!range.isEmpty && inSel.length > 0) {
            fix(`Convert ${inSel.length} dropout site${inSel.length > 1 ? 's' : ''} in the selection to packed dropout`, vscode.CodeActionKind.RefactorRewrite, Commands.convertToPackedDropout, [doc.uri, range]);
          }
          const model = MODEL_LINE.exec(doc.lineAt(range.start.line).text)?.[1];
          // In a file that calls torch.compile, packing is not proposed (see COMPILED_DROPOUT_REASON).
          const compiled = result.sites.some((s) => s.compiled);
          if (model !== undefined && MODEL_NAME.test(model) && !compiled) {
            fix(`Insert membit.patch(${model}, dropout="packed") after this line`, vscode.CodeActionKind.RefactorRewrite, Commands.insertPatchCall, [doc.uri, range.start.line]);
          }
          return actions;
        },
      },
      { providedCodeActionKinds: [vscode.CodeActionKind.QuickFix, vscode.CodeActionKind.RefactorRewrite] },
    ),
  );

  /** Resolves (uri?, line-or-range?) arguments, or the active editor's selection. */
  const target = async (uriArg: unknown, where: unknown): Promise<{ doc: vscode.TextDocument; range: vscode.Range } | undefined> => {
    let doc: vscode.TextDocument | undefined;
    let range: vscode.Range | undefined;
    if (uriArg instanceof vscode.Uri) {
      doc = await vscode.workspace.openTextDocument(uriArg);
      if (typeof where === 'number') range = new vscode.Range(where, 0, where, 0);
      else if (where instanceof vscode.Range) range = where;
    }
    const editor = vscode.window.activeTextEditor;
    if (!doc && editor) doc = editor.document;
    if (!range && editor && doc && editor.document === doc) range = editor.selection;
    if (!doc || !range) {
      void notify.info('Membit: put the cursor on a dropout line (or select code) in a Python file first.');
      return undefined;
    }
    const why = refuse(doc);
    if (why) {
      void notify.warn(`Membit: ${why}`);
      return undefined;
    }
    return { doc, range };
  };

  const apply = async (doc: vscode.TextDocument, r: ConvertResult, what: string): Promise<ConvertResult> => {
    if (r.edits.length === 0) {
      void notify.info(`Membit: nothing to convert here.${skippedText(r)}`);
      return r;
    }
    const ok = await vscode.workspace.applyEdit(workspaceEditFor(doc.uri, r.edits));
    if (!ok) throw new Error(`the edit to ${vscode.workspace.asRelativePath(doc.uri)} could not be applied (the file changed?)`);
    log.info(`${what}: ${r.converted.length} converted in ${doc.uri.fsPath}${skippedText(r)}`);
    void notify.info(`Membit: ${what}: ${r.converted.length} site${r.converted.length === 1 ? '' : 's'} converted.${skippedText(r)} Undo restores the original.`);
    return r;
  };

  const convertAt = (opts: ConvertOptions, what: string, codes: ReadonlySet<string> = DROPOUT_CODES) => async (uriArg?: unknown, where?: unknown) => {
    const t = await target(uriArg, where);
    if (!t) return undefined;
    const result = await scan.resultFor(t.doc);
    if (!result) throw new Error('the scanner is not ready yet; try again in a moment');
    const r = t.range;
    const sel = { startLine: r.start.line, startCol: r.start.character, endLine: r.end.line, endCol: r.end.character };
    let sites = sitesIn(result.sites, sel).filter((s) => codes.has(s.code));
    // A cursor anywhere on a site's line counts as on the site.
    if (sites.length === 0 && r.isEmpty) sites = result.sites.filter((s) => codes.has(s.code) && s.range.startLine <= r.start.line && r.start.line <= s.range.endLine);
    if (sites.length === 0) {
      void notify.info(`Membit: no ${codes === DROPOUT_CODES ? 'dropout' : 'FFN'} site at the cursor. Membit marks the sites it finds with an Information diagnostic.`);
      return undefined;
    }
    return apply(t.doc, convertAll(t.doc.getText(), sites, opts), what);
  };

  const convertToPackedDropout = convertAt({ dropout: 'packed' }, 'packed dropout');
  const convertToRecomputeDropout = convertAt({ dropout: 'recompute' }, 'mask-free dropout');
  const convertFfnToSparse24 = convertAt({ ffn: '2:4' }, '2:4 sparse FFN', new Set(['membit.ffn']));

  /** Whole file: every dropout site, previewed (refactor preview) before it is applied. */
  const convertAllInFile = async (uriArg?: unknown, opts?: unknown) => {
    const t = await target(uriArg instanceof vscode.Uri ? uriArg : undefined, 0);
    if (!t) return undefined;
    const result = await scan.resultFor(t.doc);
    if (!result) throw new Error('the scanner is not ready yet; try again in a moment');
    const r = convertAll(t.doc.getText(), result.sites, { dropout: 'packed' });
    if (r.edits.length === 0) {
      void notify.info(`Membit: no dropout site to convert in this file.${skippedText(r)}`);
      return r;
    }
    const preview = (opts as { preview?: boolean } | undefined)?.preview !== false;
    const ok = await vscode.workspace.applyEdit(workspaceEditFor(t.doc.uri, r.edits, preview ? 'Convert to packed dropout' : undefined), { isRefactoring: true });
    if (ok) void notify.info(`Membit: ${r.converted.length} site(s) converted to packed dropout.${skippedText(r)}`);
    return r;
  };

  /** Whole workspace: every Python file's dropout sites in one previewed WorkspaceEdit. */
  const convertAllInWorkspace = async (opts?: unknown) => {
    const files = await vscode.workspace.findFiles('**/*.py', '{**/node_modules/**,**/.venv/**,**/venv/**,**/.git/**,**/site-packages/**,**/.membit/**}', 5000);
    const we = new vscode.WorkspaceEdit();
    const preview = (opts as { preview?: boolean } | undefined)?.preview !== false;
    let converted = 0;
    let touched = 0;
    await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: 'Membit: scanning the workspace', cancellable: true }, async (progress, token) => {
      for (const [i, uri] of files.entries()) {
        if (token.isCancellationRequested) return;
        progress.report({ message: `${i + 1}/${files.length} ${vscode.workspace.asRelativePath(uri)}`, increment: 100 / files.length });
        const doc = await vscode.workspace.openTextDocument(uri);
        if (refuse(doc)) continue;
        const result = await scan.resultFor(doc);
        if (!result) continue;
        const r = convertAll(doc.getText(), result.sites, { dropout: 'packed' });
        if (!r.edits.length) continue;
        touched++;
        converted += r.converted.length;
        for (const e of r.edits) {
          if (preview) we.replace(uri, toRange(e.range), e.newText, { label: 'Convert to packed dropout', needsConfirmation: true });
          else we.replace(uri, toRange(e.range), e.newText);
        }
      }
    });
    if (touched === 0) {
      void notify.info('Membit: no dropout site to convert in this workspace.');
      return 0;
    }
    const ok = await vscode.workspace.applyEdit(we, { isRefactoring: true });
    if (ok) void notify.info(`Membit: ${converted} site(s) in ${touched} file(s) converted to packed dropout.`);
    return converted;
  };

  const revertConversions = async (uriArg?: unknown) => {
    const t = await target(uriArg instanceof vscode.Uri ? uriArg : undefined, 0);
    if (!t) return undefined;
    const r = revertAll(t.doc.getText());
    if (r.edits.length === 0) {
      void notify.info('Membit: no Membit conversion in this file.');
      return r;
    }
    await vscode.workspace.applyEdit(workspaceEditFor(t.doc.uri, r.edits));
    void notify.info(`Membit: restored ${r.reverted.length} stock PyTorch call(s)${r.patchCalls.length ? ` and removed ${r.patchCalls.length} membit.patch line(s)` : ''}.${r.warnings.length ? ` ${r.warnings.join(' ')}` : ''}`);
    return r;
  };

  const insertPatch = async (uriArg?: unknown, lineArg?: unknown) => {
    const t = await target(uriArg, lineArg);
    if (!t) return undefined;
    const mode = await vscode.window.showQuickPick(
      [
        { label: 'packed', description: '1 bit per mask element' },
        { label: 'recompute', description: 'no mask stored; regenerated from the RNG seed in backward' },
      ],
      { title: 'Membit: dropout mode for membit.patch' },
    );
    if (!mode) return undefined;
    const r = insertPatchCall(t.doc.getText(), t.range.start.line, { dropout: mode.label as 'packed' | 'recompute' });
    if (!r.ok) {
      void notify.warn(`Membit: ${r.reason}`);
      return undefined;
    }
    await vscode.workspace.applyEdit(workspaceEditFor(t.doc.uri, r.edits));
    return r;
  };

  return { convertToPackedDropout, convertToRecomputeDropout, convertFfnToSparse24, convertAllInFile, convertAllInWorkspace, revertConversions, insertPatchCall: insertPatch };
}
