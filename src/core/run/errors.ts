/**
 * Turns what a failed run left behind (exit code, stderr tail, report error) into a
 * sentence a user can act on. Pure, so every case is unit-tested.
 */
export interface FailureInput {
  python: string;
  /** "local" or the SSH host alias. */
  where: string;
  exitCode: number | null;
  stderrTail: readonly string[];
  spawnError?: string;
  /** The process ended without the harness writing a report (nor saying it finished). */
  noReport?: boolean;
}

export function explainFailure(f: FailureInput): string {
  const text = f.stderrTail.join('\n');
  const on = f.where === 'local' ? '' : ` on ${f.where}`;
  if (f.spawnError?.includes('ENOENT')) {
    return `${f.python} not found${on}: install Python 3, or set membit.python to an interpreter that has PyTorch.`;
  }
  if (/No module named ['"]?torch['"]?/.test(text)) {
    return `torch not installed in ${f.python}${on}: install PyTorch there (pip install torch), or point membit.python at an environment that has it.`;
  }
  if (/No module named ['"]?membit/.test(text)) {
    return `the membit package could not be imported by ${f.python}${on}; reinstall the extension or pip install its kernels/ folder.`;
  }
  if (/CUDA out of memory|OutOfMemoryError/.test(text)) {
    return `the run ran out of GPU memory${on}; the report shows what was held at the failure.`;
  }
  const last = lastTracebackLines(f.stderrTail, 3);
  if (f.noReport) {
    // The script runs inside the harness's process and can end it with any status
    // (os._exit(3) is not the harness's out-of-memory code): without a report the code says nothing.
    const how = f.exitCode === null ? 'was killed' : `ended with status ${f.exitCode}`;
    if (last.length) return `the run ${how}${on} and left no report: ${last.join(' | ')}`;
    return `the run ${how}${on} before the harness wrote a report: the script ended the process itself (os._exit, a crash or a signal), so the status says nothing about memory`;
  }
  if (last.length) return `the script failed${on}: ${last.join(' | ')}`;
  return `the run exited with code ${f.exitCode ?? 'unknown'}${on}; see the Membit output for details.`;
}

/** The last non-empty lines of a traceback: where it failed and the exception. */
export function lastTracebackLines(lines: readonly string[], n: number): string[] {
  const nonEmpty = lines.map((l) => l.trimEnd()).filter((l) => l.trim().length > 0);
  return nonEmpty.slice(-n).map((l) => l.trim());
}
