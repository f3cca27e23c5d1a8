/**
 * The steps of a remote run that are not the run itself: check the target, upload
 * files into its content-addressed cache, fetch the report, stop a process group.
 * Each is one ssh call through sshExec(), with a specific error for each way it fails.
 *
 * Remote layout under the work folder:
 *   objects/<sha256>          one file's content, verified on arrival
 *   trees/<tree hash>/        a plain copy of a whole tree (workspace or package)
 *   trees/<tree hash>.json    its manifest, written last: the tree is complete
 *   incoming/<id>/            a tar stream being unpacked
 *   runs/<id>/                one run: its report, sites file, pid; removed on fetch
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { once } from 'node:events';
import type { HashedFile } from './files';
import { FETCH_SH, MATERIALIZE_PY, PREFLIGHT_SH, PROBE_PY, QUERY_PY, RECEIVE_SH, REPORT_MARKER } from './remoteScripts';
import { execFailure, RunError, sshExec, type SshOptions } from './ssh';
import { tarEnd, tarEntry, tarHeader, tarPadding } from './tar';

/** What the preflight learnt about a target. */
export interface RemoteInfo {
  host: string;
  /** The python as it will be called (a leading ~/ expanded). */
  python: string;
  pythonVersion?: string | undefined;
  /** Absolute work folder. */
  workdir: string;
  torch?: string | undefined;
  /** CUDA usable by torch. */
  cuda: boolean;
  /** GPU names as torch sees them. */
  gpus: string[];
  /** "name, memory" lines from nvidia-smi, when it is installed. */
  nvidiaSmi: string[];
}

export interface PreflightOptions {
  python: string;
  workdir: string;
  /** A target without a CUDA GPU is fine (CPU run). Default false: it is an error with code no-cuda. */
  allowCpu?: boolean | undefined;
  signal?: AbortSignal;
  timeoutMs?: number;
}

interface Probe {
  python?: string;
  executable?: string;
  workdir?: string;
  workdir_error?: string;
  torch?: string;
  torch_cuda?: string | null;
  cuda?: boolean;
  gpus?: string[];
  torch_error?: string;
  torch_missing?: boolean;
}

/** Parses the preflight's tagged output; pure, so each failure is unit-tested. */
export function interpretPreflight(stdout: string, host: string, o: { python: string; workdir: string; allowCpu?: boolean | undefined }): RemoteInfo {
  const lines = stdout.split(/\r?\n/);
  const tagged = (tag: string) => lines.filter((l) => l.startsWith(`${tag} `)).map((l) => l.slice(tag.length + 1).trim());
  const python = tagged('@@membit-python')[0] || o.python;
  const nvidiaSmi = tagged('@@membit-gpu').filter(Boolean);
  if (lines.includes('@@membit-nopython')) {
    throw new RunError('python-missing', `${python} not found on ${host}: set "python" for this host in the membit.targets setting to an interpreter with PyTorch (an absolute path; a non-interactive ssh login may not have your usual PATH)`);
  }
  const raw = tagged('@@membit-probe')[0];
  if (!raw) {
    const tail = lines.filter((l) => l.trim() && !l.startsWith('@@membit')).slice(-4);
    throw new RunError('python-missing', `${python} on ${host} did not run Membit's check${tail.length ? `: ${tail.join(' | ')}` : ''}; Membit needs Python 3.6 or newer there`);
  }
  let p: Probe;
  try {
    p = JSON.parse(raw) as Probe;
  } catch {
    throw new RunError('remote', `could not read the check's answer from ${host}: ${raw.slice(0, 200)}`);
  }
  if (p.torch_error) {
    if (p.torch_missing) {
      throw new RunError('torch-missing', `torch not installed in ${python} on ${host}: install PyTorch there (pip install torch), or set "python" for this host in membit.targets to an environment that has it`);
    }
    throw new RunError('torch-broken', `torch does not import in ${python} on ${host}: ${p.torch_error}`);
  }
  const workdir = p.workdir ?? o.workdir;
  if (p.workdir_error) {
    throw new RunError('workdir', `cannot write to ${workdir} on ${host} (${p.workdir_error}): set "workdir" for this host in membit.targets`);
  }
  const info: RemoteInfo = {
    host,
    python,
    pythonVersion: p.python,
    workdir,
    torch: p.torch,
    cuda: !!p.cuda,
    gpus: p.gpus ?? [],
    nvidiaSmi,
  };
  if (!info.cuda && !o.allowCpu) {
    const smi = nvidiaSmi.length ? ` usable by torch ${p.torch ?? ''}${p.torch_cuda ? '' : ' (a CPU-only build)'}, though nvidia-smi sees ${nvidiaSmi.map((l) => l.split(',')[0]?.trim()).join(', ')}` : '';
    throw new RunError('no-cuda', `no CUDA GPU on ${host}${smi}, run on CPU?`);
  }
  return info;
}

/** Checks the target: ssh login, python, torch, CUDA, GPU names, a writable work folder. */
export async function preflight(ssh: SshOptions, o: PreflightOptions): Promise<RemoteInfo> {
  const r = await sshExec(ssh, ['sh', '-c', PREFLIGHT_SH, 'sh', o.python, o.workdir, PROBE_PY], {
    timeoutMs: o.timeoutMs ?? 120_000,
    signal: o.signal,
  });
  const stdout = r.stdout.toString('utf8');
  // The check prints its lines and exits 0 even when torch is missing; anything else is ssh or the shell.
  if (r.code !== 0 || r.timedOut || r.aborted) {
    if (r.code !== 255 && !r.timedOut && !r.aborted && stdout.includes('@@membit-python')) {
      // The python itself failed (e.g. too old to run the probe): say so with its words.
      return interpretPreflight(stdout + '\n' + r.stderr, ssh.host, o);
    }
    throw execFailure(r, ssh.host, 'the check');
  }
  return interpretPreflight(stdout, ssh.host, o);
}

/** One set of files that becomes one folder on the target. */
export interface LocalTree {
  /** What it is, for messages: "workspace", "membit package". */
  label: string;
  files: readonly HashedFile[];
  hash: string;
}

export interface UploadProgress {
  files: number;
  bytes: number;
  sentFiles: number;
  sentBytes: number;
}

export interface UploadResult {
  /** Absolute remote folder of each tree, by tree hash. */
  dirs: Map<string, string>;
  sentFiles: number;
  sentBytes: number;
}

/** The manifest stored beside a tree; paths are what the materializer recreates. */
export function treeManifest(t: LocalTree): Buffer {
  return Buffer.from(JSON.stringify({ label: t.label, files: t.files.map((f) => ({ path: f.path, sha256: f.sha256, x: f.executable || undefined })) }), 'utf8');
}

/**
 * Makes each tree exist on the target, sending only what the target lacks: one call
 * asks which trees are complete and which objects are missing; if anything is, a
 * second call streams a tar of the missing objects and the manifests into `tar -x`.
 */
export async function uploadTrees(
  ssh: SshOptions,
  o: { python: string; workdir: string; trees: readonly LocalTree[]; signal?: AbortSignal; onProgress?(p: UploadProgress): void },
): Promise<UploadResult> {
  const dirs = new Map(o.trees.map((t) => [t.hash, `${o.workdir}/trees/${t.hash}`]));
  const query = JSON.stringify({ trees: o.trees.map((t) => ({ hash: t.hash, objects: [...new Set(t.files.map((f) => f.sha256))] })) });
  const q = await sshExec(ssh, [o.python, '-c', QUERY_PY, o.workdir], { input: query, timeoutMs: 120_000, signal: o.signal });
  if (q.code !== 0) throw execFailure(q, ssh.host, 'checking the upload cache');
  let answer: { complete: string[]; missing: string[] };
  try {
    answer = JSON.parse(q.stdout.toString('utf8').trim().split('\n').pop() ?? '') as typeof answer;
  } catch {
    throw new RunError('upload', `could not read the upload cache's answer from ${ssh.host}`, [q.stdout.toString('utf8').slice(0, 500)]);
  }
  const pending = o.trees.filter((t) => !answer.complete.includes(t.hash));
  const missing = new Set(answer.missing);
  const toSend = new Map<string, HashedFile>();
  for (const t of pending) for (const f of t.files) if (missing.has(f.sha256) && !toSend.has(f.sha256)) toSend.set(f.sha256, f);
  const files = o.trees.reduce((n, t) => n + t.files.length, 0);
  const bytes = o.trees.reduce((n, t) => n + t.files.reduce((s, f) => s + f.size, 0), 0);
  const progress: UploadProgress = { files, bytes, sentFiles: 0, sentBytes: 0 };
  o.onProgress?.(progress);
  if (pending.length === 0) return { dirs, sentFiles: 0, sentBytes: 0 };

  const id = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  const r = await sshExec(ssh, ['sh', '-c', RECEIVE_SH, 'sh', o.workdir, id, o.python, MATERIALIZE_PY], {
    signal: o.signal,
    feed: async (stdin) => {
      const write = async (b: Buffer) => {
        if (!stdin.write(b)) await once(stdin, 'drain');
      };
      for (const f of toSend.values()) {
        await write(tarHeader(`o/${f.sha256}`, f.size));
        // Streamed and re-hashed: a file edited since it was listed must not arrive under its old hash.
        const h = await streamFile(f, write);
        if (h !== f.sha256) throw new Error(`${f.path} changed while it was being uploaded; run again`);
        await write(tarPadding(f.size));
        progress.sentFiles++;
        progress.sentBytes += f.size;
        o.onProgress?.({ ...progress });
      }
      for (const t of pending) await write(tarEntry(`m/${t.hash}.json`, treeManifest(t)));
      await write(tarEnd());
      stdin.end();
    },
  });
  if (r.code !== 0 || !r.stdout.toString('utf8').includes('@@membit-upload ok')) throw execFailure(r, ssh.host, 'the upload');
  return { dirs, sentFiles: progress.sentFiles, sentBytes: progress.sentBytes };
}

/** Writes a file's bytes through `write` and returns their sha256; the size must not have changed. */
async function streamFile(f: HashedFile, write: (b: Buffer) => Promise<void>): Promise<string> {
  const h = createHash('sha256');
  let n = 0;
  for await (const chunk of createReadStream(f.abs, { highWaterMark: 1 << 20 })) {
    const b = chunk as Buffer;
    n += b.length;
    if (n > f.size) throw new Error(`${f.path} grew while it was being uploaded; run again`);
    h.update(b);
    await write(b);
  }
  if (n !== f.size) throw new Error(`${f.path} shrank while it was being uploaded; run again`);
  return h.digest('hex');
}

/** Reads a run's report and removes its folder on the target. */
export async function fetchReport(ssh: SshOptions, rundir: string, signal?: AbortSignal): Promise<Buffer> {
  const r = await sshExec(ssh, ['sh', '-c', FETCH_SH, 'sh', rundir], { timeoutMs: 120_000, signal });
  if (r.code !== 0) throw execFailure(r, ssh.host, 'fetching the report');
  const marker = Buffer.from(`${REPORT_MARKER}\n`);
  const at = r.stdout.indexOf(marker);
  if (at < 0) throw new RunError('report', `the report from ${ssh.host} did not arrive`);
  return r.stdout.subarray(at + marker.length);
}

/** SIGTERM (or another signal) to a process group on the target; a group already gone is fine. */
export async function killRemoteGroup(ssh: SshOptions, pgid: number, sig: 'TERM' | 'KILL' = 'TERM'): Promise<void> {
  if (!Number.isInteger(pgid) || pgid <= 1) throw new Error(`not a process group id: ${pgid}`);
  const r = await sshExec(ssh, ['kill', '-s', sig, '--', `-${pgid}`], { timeoutMs: 30_000 });
  if (r.code === 255) throw execFailure(r, ssh.host, 'stopping the run');
}
