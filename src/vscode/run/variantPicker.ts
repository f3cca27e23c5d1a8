/**
 * What Profile and Compare Variants offers: the advisor's levers one by one and all
 * combined, then the conversions, preselected from what the scanner already found in
 * the script (its diagnostics; no extra scan).
 */
import * as vscode from 'vscode';
import type { Variant } from '../../core/settings';
import { ADVISOR_LEVERS, ALL_ADVISOR_LEVERS, CONVERSION_VARIANTS, describeVariant, type Lever } from '../../core/run/variants';

/** The scanner's diagnostic codes that point at an advisor lever. */
const LEVER_OF_CODE: Readonly<Record<string, Lever>> = {
  'membit.eager-attn': 'sdpa',
  'membit.attn-mask': 'sdpa',
  'membit.checkpoint': 'checkpoint',
  'membit.no-autocast': 'bf16',
};
const DROPOUT_CODES = new Set(['membit.dropout', 'membit.dropout-call', 'membit.attn-dropout']);

export type VariantItem = vscode.QuickPickItem & { variant?: Variant };

/** The picker's items. Preselected: the levers the scanner found in the script, else packed dropout and the three levers. */
export function variantItems(scriptUri: vscode.Uri): VariantItem[] {
  const codes = new Set(
    vscode.languages.getDiagnostics(scriptUri).map((d) => (typeof d.code === 'object' ? String(d.code.value) : String(d.code ?? ''))),
  );
  const found = new Set(Object.entries(LEVER_OF_CODE).filter(([code]) => codes.has(code)).map(([, lever]) => lever));
  const anyFinding = found.size > 0;
  const dropout = [...codes].some((c) => DROPOUT_CODES.has(c));
  const picked = (v: string): boolean => {
    if (!anyFinding) return v === 'packed' || (ADVISOR_LEVERS as readonly string[]).includes(v);
    if (v === ALL_ADVISOR_LEVERS) return found.size >= 2;
    return found.has(v as Lever) || (v === 'packed' && dropout);
  };
  const item = (v: string, description: string): VariantItem => ({ label: v, description, picked: picked(v), variant: v });
  return [
    { label: 'advisor levers', kind: vscode.QuickPickItemKind.Separator },
    ...ADVISOR_LEVERS.map((l) => item(l, `${describeVariant(l)}${found.has(l) ? ' · found in this file' : ''}`)),
    item(ALL_ADVISOR_LEVERS, 'all levers combined'),
    { label: 'conversions', kind: vscode.QuickPickItemKind.Separator },
    ...CONVERSION_VARIANTS.map((v) => item(v, describeVariant(v))),
    { label: 'torch.compile', kind: vscode.QuickPickItemKind.Separator },
    item('compile', `${describeVariant('compile')}: eager against compiled`),
    item('packed+compile', describeVariant('packed+compile')),
  ];
}
