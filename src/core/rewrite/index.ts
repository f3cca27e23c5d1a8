/**
 * The rewriter: scanner sites in, text edits out, shared by the editor's code
 * actions and `membit convert`. Pure functions over text; no VS Code here.
 *
 *   convertDropout / convertFfn / convertAll   sites → edits (+ what was converted or skipped, and why)
 *   sitesIn, canConvert                        which sites a selection touches; which actions to offer
 *   insertPatchCall                            `membit.patch(model, ...)` after the line that builds the model
 *   revertConversions                          back to the stock PyTorch calls, from the text alone
 *   revertAll                                  lever rewrites (from their records) and conversions, undone together
 *   applyEdits, unifiedDiff                    helpers for previews, tests and the CLI
 *   applyLever, ADVICE                         the memory advisor's levers (SDPA, checkpointing, bf16 autocast) and its advice
 */
export {
  canConvert,
  type Converted,
  type ConvertOptions,
  type ConvertResult,
  convertAll,
  convertDropout,
  convertFfn,
  type DropoutMode,
  type FfnMode,
  type SkipCode,
  type Skipped,
  sitesIn,
} from './convert';
export { applyEdits, type TextEdit } from './edits';
export { IMPORT_MARK } from './imports';
export { convertedLines, SITE_MARK, MEMBIT_QUALIFIED, MEMBIT_BARE, STOCK, type TargetKind } from './calls';
export { insertPatchCall, patchCallText, type PatchOptions, type PatchResult } from './patch';
export { type Reverted, type RevertOptions, type RevertResult, revertAll, revertConversions } from './revert';
export { type DiffOptions, patchHeaderPath, unifiedDiff } from './diff';
export {
  ADVICE,
  adviceMarkdown,
  type LeverAdvice,
  type AdviceTopic,
  applyLever,
  type Lever,
  LEVER_TITLES,
  type LeverChange,
  type LeverForm,
  LEVERS,
  leversAt,
  type LeverOptions,
  type LeverResult,
  type LeverSkip,
  type LeverSkipCode,
} from './advice';
