/**
 * Static scanner: finds dropout, attention-mask and FFN sites in PyTorch code and
 * estimates what each costs, without running anything. Pure TypeScript over
 * web-tree-sitter; no VS Code here.
 */
export { createScanner, diffEdit, ScanDocument, Scanner } from './scanner';
export { type AssetOptions, locateAssets } from './parser';
export { type CellInput, notebookCells, sanitizeCell, scanCells, scanNotebook } from './notebook';
export { type ReportLike, shapeHintsFromReport } from './shapes';
export { formatBytes } from '../units';
export { type ClassSummary, formatCount, formatHint, formatHover, hintSites, KIND_TITLE, LEVER_TITLE, siteMessage, siteSeverity, type SiteSeverity, summarizeClasses } from './format';
export { CAPABILITIES_SCHEMA, capabilitiesArgv, parseCapabilities, probeCapabilities, type ProbeOptions, type ProbeResult } from './capabilities';
export { blockActivationBytes, checkpointSaving, eagerBytesPerElement, FEATURE_TEXT, SDPA_BYTES_PER_ROW, transformerParams } from './levers';
export * from './types';
