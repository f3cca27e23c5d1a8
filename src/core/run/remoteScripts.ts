/**
 * The small programs Membit runs on a remote target, as constant text. They travel
 * as argv words (`sh -c SCRIPT sh ARGS…`, `python -c SCRIPT ARGS…`) quoted by
 * remoteCommand(), so user data only ever reaches them as arguments or on stdin,
 * never spliced into code. Python does the file work because paths there may hold
 * any character, and the target's Python is checked first anyway.
 * They stay compatible with Python 3.6 (no f-strings or walrus) for older GPU boxes.
 */

/**
 * Preflight, for `sh -c`: $1 python, $2 workdir, $3 the probe below. Lists GPUs
 * from nvidia-smi when present, then runs the probe with the target's python.
 * Lines are tagged so the login shell's own chatter (motd, rc files) is ignored.
 */
export const PREFLIGHT_SH = `py=$1
case $py in "~/"*) py=$HOME/\${py#"~/"} ;; esac
echo "@@membit-python $py"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/@@membit-gpu /'
fi
case $py in
  */*) if [ ! -f "$py" ] || [ ! -x "$py" ]; then echo "@@membit-nopython"; exit 0; fi ;;
  *) if ! command -v "$py" >/dev/null 2>&1; then echo "@@membit-nopython"; exit 0; fi ;;
esac
exec "$py" -c "$3" "$2"
`;

/** What the target's Python says about itself, torch, CUDA and the work folder. */
export const PROBE_PY = `import json, os, platform, sys
out = {"python": platform.python_version(), "executable": sys.executable}
wd = os.path.abspath(os.path.expanduser(sys.argv[1]))
out["workdir"] = wd
try:
    os.makedirs(wd, exist_ok=True)
    probe = os.path.join(wd, ".write-test-%d" % os.getpid())
    open(probe, "w").close()
    os.remove(probe)
except Exception as e:
    out["workdir_error"] = "%s: %s" % (type(e).__name__, e)
try:
    import torch
    out["torch"] = str(torch.__version__)
    out["torch_cuda"] = torch.version.cuda
    out["cuda"] = bool(torch.cuda.is_available())
    if out["cuda"]:
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
except BaseException as e:
    out["torch_error"] = "%s: %s" % (type(e).__name__, e)
    out["torch_missing"] = isinstance(e, ImportError) and getattr(e, "name", None) == "torch"
sys.stdout.write("@@membit-probe " + json.dumps(out) + "\\n")
`;

/**
 * Upload step 1: argv[1] workdir; stdin {"trees": [{"hash", "objects": [sha256…]}]}.
 * Prints which trees are complete already and which objects the rest still need.
 * A complete tree's marker is touched so the clean-up keeps trees in use.
 */
export const QUERY_PY = `import json, os, sys
wd = sys.argv[1]
req = json.load(sys.stdin)
objs = os.path.join(wd, "objects")
trees = os.path.join(wd, "trees")
res = {"complete": [], "missing": []}
need = set()
for t in req["trees"]:
    marker = os.path.join(trees, t["hash"] + ".json")
    if os.path.isfile(marker) and os.path.isdir(os.path.join(trees, t["hash"])):
        os.utime(marker, None)
        res["complete"].append(t["hash"])
    else:
        for h in t["objects"]:
            if not os.path.isfile(os.path.join(objs, h)):
                need.add(h)
res["missing"] = sorted(need)
sys.stdout.write(json.dumps(res) + "\\n")
`;

/**
 * Upload step 2, for `sh -c`: $1 workdir, $2 a fresh upload id, $3 python, $4 the
 * materializer below. Unpacks the tar stream from stdin into a private folder, then
 * lets Python check it and build the trees.
 */
export const RECEIVE_SH = `set -e
inc=$1/incoming/$2
mkdir -p "$inc"
tar -x -f - -C "$inc"
exec "$3" -c "$4" "$1" "$2"
`;

/**
 * Checks every received object against its name (its sha256), moves it into the
 * object store, builds each new tree as a plain copy (never hard links: a script that
 * rewrites one of its files must not change the store) in a temporary folder, renames
 * it into place and writes its manifest last, as the "complete" marker. Then removes
 * trees, objects and run folders nothing has used for a while.
 * Paths are handled as UTF-8 bytes so any file name works whatever the remote locale.
 */
export const MATERIALIZE_PY = `import hashlib, json, os, shutil, sys, time
wd, inc_id = sys.argv[1], sys.argv[2]
objs = os.path.join(wd, "objects")
trees = os.path.join(wd, "trees")
runs = os.path.join(wd, "runs")
incoming = os.path.join(wd, "incoming")
inc = os.path.join(incoming, inc_id)
for d in (objs, trees, runs):
    os.makedirs(d, exist_ok=True)
KEEP_TREES = 6
HOUR = 3600

def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

od = os.path.join(inc, "o")
for name in (sorted(os.listdir(od)) if os.path.isdir(od) else []):
    p = os.path.join(od, name)
    if digest(p) != name:
        sys.exit("membit: the upload arrived damaged (object %s); run again" % name)
    os.replace(p, os.path.join(objs, name))

md = os.path.join(inc, "m")
for mname in (sorted(os.listdir(md)) if os.path.isdir(md) else []):
    th = mname[:-len(".json")]
    final = os.path.join(trees, th)
    marker = final + ".json"
    if os.path.isfile(marker) and os.path.isdir(final):
        os.utime(marker, None)
        continue
    with open(os.path.join(md, mname), "rb") as f:
        man = json.loads(f.read().decode("utf-8"))
    tmp = final + ".tmp-" + inc_id
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    btmp = tmp.encode("utf-8")
    for e in man["files"]:
        rel = e["path"]
        parts = rel.split("/")
        if rel.startswith("/") or any(x in ("", ".", "..") for x in parts) or "\\0" in rel:
            sys.exit("membit: refusing the unsafe path %r" % rel)
        dst = os.path.join(btmp, *[x.encode("utf-8") for x in parts])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(objs, e["sha256"]), dst)
        os.chmod(dst, 0o755 if e.get("x") else 0o644)
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    shutil.copyfile(os.path.join(md, mname), marker + ".tmp")
    os.replace(marker + ".tmp", marker)
shutil.rmtree(inc, ignore_errors=True)

def age(p):
    try:
        return now - os.path.getmtime(p)
    except OSError:
        return 0

now = time.time()
in_use = set()
for r in os.listdir(runs):
    rp = os.path.join(runs, r)
    if age(rp) > 3 * 24 * HOUR:
        shutil.rmtree(rp, ignore_errors=True)
        continue
    try:
        with open(os.path.join(rp, "trees")) as f:
            in_use.update(f.read().split())
    except OSError:
        pass
markers = sorted((os.path.getmtime(os.path.join(trees, m)), m[:-5]) for m in os.listdir(trees) if m.endswith(".json"))
newest = set(th for _, th in markers[-KEEP_TREES:])
kept = []
for mtime, th in markers:
    if th in newest or th in in_use or now - mtime < HOUR:
        kept.append(th)
        continue
    os.remove(os.path.join(trees, th + ".json"))
    shutil.rmtree(os.path.join(trees, th), ignore_errors=True)
for name in os.listdir(trees):
    if ".tmp" in name and age(os.path.join(trees, name)) > HOUR:
        p = os.path.join(trees, name)
        shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)
refs = set()
for th in kept:
    try:
        with open(os.path.join(trees, th + ".json"), "rb") as f:
            refs.update(e["sha256"] for e in json.loads(f.read().decode("utf-8"))["files"])
    except (OSError, ValueError, KeyError):
        pass
for o in os.listdir(objs):
    if o not in refs and age(os.path.join(objs, o)) > HOUR:
        os.remove(os.path.join(objs, o))
for d in (os.listdir(incoming) if os.path.isdir(incoming) else []):
    if age(os.path.join(incoming, d)) > HOUR:
        shutil.rmtree(os.path.join(incoming, d), ignore_errors=True)
sys.stdout.write("@@membit-upload ok\\n")
`;

/**
 * Runs the harness on the target, for `python -c`, argv[1] a JSON config:
 * {rundir, cwd, argv, env, pythonpath, sites, trees, idle_s, grace_s}.
 *
 * The harness starts in a new session (setsid), so its process group holds the
 * script and everything it spawns, and the group id is printed first as an
 * "@@membit {"event":"remote"...}" line. This supervisor stays between ssh and the
 * group and owns its end:
 * - stdin is the line to the client: "c" means cancel (SIGTERM to the group, then
 *   SIGKILL after grace_s); any other byte is a heartbeat;
 * - end of stdin without "c", no heartbeat for idle_s, or SIGHUP/SIGTERM to the
 *   supervisor means the client is gone (killed sshd, dropped network, closed editor):
 *   the group is stopped the same way and the run folder removed, so nothing is left;
 * - when the harness exits, whatever it left in its group is killed.
 * The exit status is the harness's (128+N for a signal).
 */
export const SUPERVISOR_PY = `import json, os, select, shutil, signal, subprocess, sys, time
cfg = json.loads(sys.argv[1])
rundir = cfg["rundir"]
os.makedirs(rundir, exist_ok=True)
with open(os.path.join(rundir, "trees"), "w") as f:
    f.write("\\n".join(cfg["trees"]) + "\\n")
if cfg.get("sites") is not None:
    with open(os.path.join(rundir, "sites.json"), "wb") as f:
        f.write(cfg["sites"].encode("utf-8"))

def say(line):
    try:
        sys.stderr.write(line + "\\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass

state = {"lost": False, "cancel": False}

def gone(signum, frame):
    state["lost"] = True

for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
    signal.signal(s, gone)

env = dict(os.environ)
env.update(cfg["env"])
if cfg.get("pythonpath"):
    env["PYTHONPATH"] = os.pathsep.join([cfg["pythonpath"]] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
# The harness's control channel (membit/profile/control.py): "c" cancels, end of file (we died) stops it.
ctl_r, ctl_w = os.pipe()
env["MEMBIT_CONTROL_FD"] = str(ctl_r)
token = cfg.get("token") or ""
try:
    # A working folder with no uploaded files in it does not exist in the copy yet.
    os.makedirs(cfg["cwd"], exist_ok=True)
    p = subprocess.Popen(cfg["argv"], cwd=cfg["cwd"], env=env, stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=(ctl_r,))
except OSError as e:
    say("membit: could not start %s: %s" % (cfg["argv"][0], e))
    sys.exit(127)
os.close(ctl_r)
with open(os.path.join(rundir, "pid"), "w") as f:
    f.write("%d\\n" % p.pid)
say("@@membit " + (token + " " if token else "") + json.dumps({"event": "remote", "pid": p.pid, "pgid": p.pid}))

def tell(data):
    global ctl_w
    if ctl_w is None:
        return
    try:
        if data:
            os.write(ctl_w, data)
        else:
            os.close(ctl_w)
            ctl_w = None
    except OSError:
        pass

def killpg(sig):
    try:
        os.killpg(p.pid, sig)
    except OSError:
        pass

idle, grace = float(cfg["idle_s"]), float(cfg["grace_s"])
stdin_open = True
last_beat = time.time()
term_at = None
while p.poll() is None:
    if stdin_open:
        try:
            ready = select.select([0], [], [], 0.5)[0]
        except (OSError, ValueError):
            ready, stdin_open = [], False
        if ready:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                stdin_open = False
                if not state["cancel"]:
                    state["lost"] = True
            else:
                last_beat = time.time()
                if b"c" in data:
                    state["cancel"] = True
        elif time.time() - last_beat > idle:
            state["lost"] = True
    else:
        try:
            p.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    if (state["cancel"] or state["lost"]) and term_at is None:
        term_at = time.time()
        tell(b"c")
        killpg(signal.SIGTERM)
    if term_at is not None and time.time() - term_at > grace:
        killpg(signal.SIGKILL)
# The run is over: whatever the script started and left behind goes with it.
killpg(signal.SIGKILL)
tell(b"")
if state["lost"]:
    shutil.rmtree(rundir, ignore_errors=True)
code = p.returncode
sys.exit(code if code >= 0 else 128 - code)
`;

/**
 * Fetch, for `sh -c`: $1 the run folder. Prints a marker line then the report (so
 * whatever a login script printed first is told apart), then removes the folder either way.
 */
export const REPORT_MARKER = '@@membit-report';
export const FETCH_SH = `f=$1/report.json
if [ -f "$f" ]; then echo "${REPORT_MARKER}"; cat -- "$f"; rc=$?; else echo "membit: the run left no report" >&2; rc=3; fi
rm -rf -- "$1"
exit $rc
`;
