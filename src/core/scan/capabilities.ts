/**
 * What the installed torch can do, asked of a Python interpreter with
 * `python -m membit.capabilities` (argv array, time limit, no shell). The advisor
 * marks a lever unavailable when the answer says its feature is missing; any failure
 * (no Python, no torch, a timeout) leaves the capabilities unknown.
 */
import { execFile } from 'node:child_process';
import { delimiter } from 'node:path';
import { TORCH_FEATURES, type TorchCapabilities, type TorchFeature } from './types';

export const CAPABILITIES_SCHEMA = 'membit.capabilities/1';

/** The command line, as an argv array: nothing of it passes through a shell. */
export function capabilitiesArgv(python: string): [string, ...string[]] {
  return [python, '-m', 'membit.capabilities'];
}

/** Reads the module's JSON output; a string is the reason it is not usable. */
export function parseCapabilities(stdout: string): TorchCapabilities | string {
  let doc: unknown;
  try {
    doc = JSON.parse(stdout.trim().split('\n').pop() ?? '');
  } catch {
    return `not JSON: ${stdout.trim().slice(0, 200) || '(no output)'}`;
  }
  if (!doc || typeof doc !== 'object') return 'not a JSON object';
  const d = doc as { schema?: unknown; torch?: unknown; features?: unknown; error?: unknown };
  if (d.schema !== CAPABILITIES_SCHEMA) return `unexpected schema ${JSON.stringify(d.schema)} (want ${CAPABILITIES_SCHEMA})`;
  if (typeof d.error === 'string') return d.error;
  if (typeof d.torch !== 'string' || !d.features || typeof d.features !== 'object') return 'no torch version or features';
  const features: Partial<Record<TorchFeature, boolean>> = {};
  for (const f of TORCH_FEATURES) {
    const v = (d.features as Record<string, unknown>)[f];
    if (typeof v === 'boolean') features[f] = v;
  }
  return { schema: CAPABILITIES_SCHEMA, torch: d.torch, features };
}

export interface ProbeOptions {
  /** Folder holding the `membit` package (the bundled kernels), put first on PYTHONPATH. */
  kernelsDir: string;
  timeoutMs?: number;
  /** Working folder of the interpreter; default: the kernels folder. */
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Ends the interpreter early (the editor closing). */
  signal?: AbortSignal;
}

export interface ProbeResult {
  capabilities?: TorchCapabilities;
  /** Why there are none: names the interpreter and what went wrong. */
  error?: string;
}

/** Runs `python -m membit.capabilities`. Never rejects: failures come back as `error`. */
export function probeCapabilities(python: string, o: ProbeOptions): Promise<ProbeResult> {
  const [cmd, ...args] = capabilitiesArgv(python);
  const base = o.env ?? process.env;
  const env = { ...base, PYTHONPATH: [o.kernelsDir, base['PYTHONPATH']].filter(Boolean).join(delimiter), PYTHONDONTWRITEBYTECODE: '1' };
  return new Promise((resolve) => {
    try {
      // `python -m` puts its working folder first on sys.path: the kernels folder holds nothing else to import.
      const options = { env, cwd: o.cwd ?? o.kernelsDir, timeout: o.timeoutMs ?? 60_000, maxBuffer: 1 << 20, windowsHide: true, ...(o.signal ? { signal: o.signal } : {}) };
      execFile(cmd, args, options, (err, stdout, stderr) => {
        const parsed = stdout ? parseCapabilities(stdout) : undefined;
        if (parsed && typeof parsed !== 'string') {
          resolve({ capabilities: parsed });
          return;
        }
        const e = err as (NodeJS.ErrnoException & { killed?: boolean }) | null;
        let why: string;
        if (e?.code === 'ENOENT') why = `${python} was not found`;
        else if (e?.name === 'AbortError') why = 'cancelled';
        else if (e?.killed) why = `${python} -m membit.capabilities did not answer within ${Math.round((o.timeoutMs ?? 60_000) / 1000)} s`;
        else if (typeof parsed === 'string' && stdout) why = parsed;
        else why = `${python} -m membit.capabilities failed: ${stderr.trim().split('\n').slice(-3).join(' ') || e?.message || 'no output'}`;
        resolve({ error: why });
      });
    } catch (e) {
      resolve({ error: `${python}: ${e instanceof Error ? e.message : String(e)}` });
    }
  });
}
