/**
 * Every command id Membit contributes, in one table. package.json's
 * `contributes.commands` must list exactly these (a unit test checks it).
 */
export const Commands = {
  convertToPackedDropout: 'membit.convertToPackedDropout',
  convertToRecomputeDropout: 'membit.convertToRecomputeDropout',
  convertFfnToSparse24: 'membit.convertFfnToSparse24',
  convertAllInFile: 'membit.convertAllInFile',
  convertAllInWorkspace: 'membit.convertAllInWorkspace',
  revertConversions: 'membit.revertConversions',
  insertPatchCall: 'membit.insertPatchCall',
  profileRun: 'membit.profileRun',
  compareRuns: 'membit.compareRuns',
  compareVariants: 'membit.compareVariants',
  findMaxBatchSize: 'membit.findMaxBatchSize',
  predictMemory: 'membit.predictMemory',
  showReport: 'membit.showReport',
  pickRank: 'membit.pickRank',
  openSnapshot: 'membit.openSnapshot',
  deleteRuns: 'membit.deleteRuns',
  toggleOverlays: 'membit.toggleOverlays',
  selectRun: 'membit.selectRun',
  selectRunTarget: 'membit.selectRunTarget',
} as const;

/** Commands not in package.json: for the end-to-end tests and internal wiring. */
export const InternalCommands = {
  appliedOverlays: 'membit._test.appliedOverlays',
  reloadReports: 'membit._test.reloadReports',
  reportViewRendered: 'membit._test.reportViewRendered',
  scanState: 'membit._test.scanState',
  recentlyShown: 'membit._test.recentlyShown',
  statusBar: 'membit._test.statusBar',
  gpuBackend: 'membit._test.gpuBackend',
  /** The advisor's code actions: apply a lever at a line; show a lever's explanation and docs. */
  applyLever: 'membit._applyLever',
  showAdvice: 'membit._showAdvice',
} as const;

export type CommandId = (typeof Commands)[keyof typeof Commands];

