// membit_nvml: GPU inventory and per-process memory sampling through NVML.
//
// The NVIDIA driver's libnvidia-ml.so.1 is opened with dlopen() at run time, never
// linked, so the addon builds and loads on machines without a driver and reports
// "no NVML" there. The few NVML types and entry points it uses are declared below
// (they are part of NVML's stable C ABI), so no CUDA headers are needed to build.
//
// Built against Node-API only: one binary loads in Node 20+, in code-server's Node
// and in VS Code's Electron.
#include <napi.h>

#include <dlfcn.h>

#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {

// ---------------------------------------------------------------------------
// The NVML ABI subset (names and layouts as in NVIDIA's nvml.h).

using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;

constexpr nvmlReturn_t kSuccess = 0;
constexpr nvmlReturn_t kErrNotSupported = 3;
constexpr nvmlReturn_t kErrInsufficientSize = 7;
constexpr nvmlReturn_t kErrFunctionNotFound = 13;
constexpr nvmlReturn_t kErrArgumentVersionMismatch = 25;

// usedGpuMemory holds this when the driver cannot say (e.g. some containers).
constexpr unsigned long long kValueNotAvailable = ~0ULL;

struct MemoryV1 {
  unsigned long long total, free, used;
};
// v2 splits the driver's own reservation out of `used`; nvidia-smi's memory.used
// is v2's `used`, so v2 is preferred where the driver has it.
struct MemoryV2 {
  unsigned int version;
  unsigned long long total, reserved, free, used;
};
constexpr unsigned int kMemoryV2Version = sizeof(MemoryV2) | (2u << 24);

struct ProcessV1 {
  unsigned int pid;
  unsigned long long usedGpuMemory;
};
struct ProcessV2 {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId, computeInstanceId;
};
static_assert(sizeof(MemoryV2) == 40, "nvmlMemory_v2_t layout");
static_assert(sizeof(ProcessV1) == 16, "nvmlProcessInfo_v1_t layout");
static_assert(sizeof(ProcessV2) == 24, "nvmlProcessInfo_v2_t layout");

// NVML_ERROR_* names by value, for the `code` of thrown errors and for messages
// when the library has no nvmlErrorString (or is gone).
const char* ErrorName(nvmlReturn_t r) {
  switch (r) {
    case 0: return "NVML_SUCCESS";
    case 1: return "NVML_ERROR_UNINITIALIZED";
    case 2: return "NVML_ERROR_INVALID_ARGUMENT";
    case 3: return "NVML_ERROR_NOT_SUPPORTED";
    case 4: return "NVML_ERROR_NO_PERMISSION";
    case 5: return "NVML_ERROR_ALREADY_INITIALIZED";
    case 6: return "NVML_ERROR_NOT_FOUND";
    case 7: return "NVML_ERROR_INSUFFICIENT_SIZE";
    case 8: return "NVML_ERROR_INSUFFICIENT_POWER";
    case 9: return "NVML_ERROR_DRIVER_NOT_LOADED";
    case 10: return "NVML_ERROR_TIMEOUT";
    case 11: return "NVML_ERROR_IRQ_ISSUE";
    case 12: return "NVML_ERROR_LIBRARY_NOT_FOUND";
    case 13: return "NVML_ERROR_FUNCTION_NOT_FOUND";
    case 14: return "NVML_ERROR_CORRUPTED_INFOROM";
    case 15: return "NVML_ERROR_GPU_IS_LOST";
    case 16: return "NVML_ERROR_RESET_REQUIRED";
    case 17: return "NVML_ERROR_OPERATING_SYSTEM";
    case 18: return "NVML_ERROR_LIB_RM_VERSION_MISMATCH";
    case 19: return "NVML_ERROR_IN_USE";
    case 20: return "NVML_ERROR_MEMORY";
    case 21: return "NVML_ERROR_NO_DATA";
    case 22: return "NVML_ERROR_VGPU_ECC_NOT_ENABLED";
    case 23: return "NVML_ERROR_INSUFFICIENT_RESOURCES";
    case 24: return "NVML_ERROR_FREQ_NOT_SUPPORTED";
    case 25: return "NVML_ERROR_ARGUMENT_VERSION_MISMATCH";
    case 26: return "NVML_ERROR_DEPRECATED";
    case 27: return "NVML_ERROR_NOT_READY";
    case 28: return "NVML_ERROR_GPU_NOT_FOUND";
    case 29: return "NVML_ERROR_INVALID_STATE";
    default: return "NVML_ERROR_UNKNOWN";
  }
}

// ---------------------------------------------------------------------------
// The opened library. Process-wide: NVML itself is a per-process singleton.

struct Nvml {
  void* lib = nullptr;
  bool ready = false;
  std::string path;
  std::string reason;  // why not ready, or what is ready
  std::string driverVersion;

  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  const char* (*errorString)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*systemDriverVersion)(char*, unsigned) = nullptr;
  nvmlReturn_t (*deviceCount)(unsigned*) = nullptr;
  nvmlReturn_t (*handleByIndex)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*memoryV1)(nvmlDevice_t, MemoryV1*) = nullptr;
  nvmlReturn_t (*memoryV2)(nvmlDevice_t, MemoryV2*) = nullptr;
  nvmlReturn_t (*computeCapability)(nvmlDevice_t, int*, int*) = nullptr;
  nvmlReturn_t (*processesV2)(nvmlDevice_t, unsigned*, ProcessV2*) = nullptr;
  nvmlReturn_t (*processesV1)(nvmlDevice_t, unsigned*, ProcessV1*) = nullptr;
};

Nvml g_nvml;
// The library init(path) asked for; empty: $MEMBIT_NVML_LIB, else the driver's.
std::string g_configuredPath;
// Guards g_nvml's opening and closing. Calls through an opened table need no lock:
// NVML is thread-safe, and the table only changes while no sampler thread runs.
std::mutex g_nvmlMu;

std::string ErrorText(nvmlReturn_t r) {
  const char* s = g_nvml.errorString ? g_nvml.errorString(r) : nullptr;
  return s && *s ? std::string(s) : std::string(ErrorName(r));
}

template <typename T>
T Sym(void* lib, const char* name) {
  return reinterpret_cast<T>(dlsym(lib, name));
}

void CloseLocked() {
  if (g_nvml.lib) {
    if (g_nvml.ready && g_nvml.shutdown) g_nvml.shutdown();
    dlclose(g_nvml.lib);
  }
  std::string keepPath = g_nvml.path;
  g_nvml = Nvml();
  g_nvml.path = keepPath;
}

// Opens and initializes NVML unless it already is: the library init() named, else
// $MEMBIT_NVML_LIB, else the driver's libnvidia-ml.so.1 through the loader's search
// path. A failed attempt is retried on the next call, so a driver loaded later is
// picked up.
bool EnsureOpenLocked() {
  if (g_nvml.ready) return true;
  CloseLocked();
  const char* env = std::getenv("MEMBIT_NVML_LIB");
  g_nvml.path = !g_configuredPath.empty() ? g_configuredPath : (env && *env ? env : "libnvidia-ml.so.1");

  dlerror();
  void* lib = dlopen(g_nvml.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    std::string detail = e ? e : "";
    if (detail.find("No such file") != std::string::npos || detail.empty()) {
      g_nvml.reason = "no NVML: " + g_nvml.path + " not found";
    } else {
      g_nvml.reason = "no NVML: cannot load " + g_nvml.path + ": " + detail;
    }
    return false;
  }
  g_nvml.lib = lib;
  auto& n = g_nvml;
  n.init = Sym<decltype(n.init)>(lib, "nvmlInit_v2");
  if (!n.init) n.init = Sym<decltype(n.init)>(lib, "nvmlInit");
  n.shutdown = Sym<decltype(n.shutdown)>(lib, "nvmlShutdown");
  n.errorString = Sym<decltype(n.errorString)>(lib, "nvmlErrorString");
  n.systemDriverVersion = Sym<decltype(n.systemDriverVersion)>(lib, "nvmlSystemGetDriverVersion");
  n.deviceCount = Sym<decltype(n.deviceCount)>(lib, "nvmlDeviceGetCount_v2");
  if (!n.deviceCount) n.deviceCount = Sym<decltype(n.deviceCount)>(lib, "nvmlDeviceGetCount");
  n.handleByIndex = Sym<decltype(n.handleByIndex)>(lib, "nvmlDeviceGetHandleByIndex_v2");
  if (!n.handleByIndex) n.handleByIndex = Sym<decltype(n.handleByIndex)>(lib, "nvmlDeviceGetHandleByIndex");
  n.name = Sym<decltype(n.name)>(lib, "nvmlDeviceGetName");
  n.uuid = Sym<decltype(n.uuid)>(lib, "nvmlDeviceGetUUID");
  n.memoryV1 = Sym<decltype(n.memoryV1)>(lib, "nvmlDeviceGetMemoryInfo");
  n.memoryV2 = Sym<decltype(n.memoryV2)>(lib, "nvmlDeviceGetMemoryInfo_v2");
  n.computeCapability = Sym<decltype(n.computeCapability)>(lib, "nvmlDeviceGetCudaComputeCapability");
  // _v3 and _v2 both take the four-field struct; the unversioned name takes the
  // two-field one.
  n.processesV2 = Sym<decltype(n.processesV2)>(lib, "nvmlDeviceGetComputeRunningProcesses_v3");
  if (!n.processesV2) n.processesV2 = Sym<decltype(n.processesV2)>(lib, "nvmlDeviceGetComputeRunningProcesses_v2");
  n.processesV1 = Sym<decltype(n.processesV1)>(lib, "nvmlDeviceGetComputeRunningProcesses");

  const char* missing = !n.init ? "nvmlInit_v2"
                        : !n.shutdown ? "nvmlShutdown"
                        : !n.deviceCount ? "nvmlDeviceGetCount_v2"
                        : !n.handleByIndex ? "nvmlDeviceGetHandleByIndex_v2"
                        : !n.name ? "nvmlDeviceGetName"
                        : !n.uuid ? "nvmlDeviceGetUUID"
                        : !n.memoryV1 ? "nvmlDeviceGetMemoryInfo"
                        : nullptr;
  if (missing) {
    std::string p = n.path;
    dlclose(lib);
    g_nvml = Nvml();
    g_nvml.path = p;
    g_nvml.reason = std::string("no NVML: ") + p + " has no " + missing + " (driver too old?)";
    return false;
  }
  nvmlReturn_t r = n.init();
  if (r != kSuccess) {
    std::string p = n.path;
    std::string text = ErrorText(r);
    dlclose(lib);
    g_nvml = Nvml();
    g_nvml.path = p;
    g_nvml.reason = std::string("NVML failed to initialize: ") + text + " (" + ErrorName(r) + ")";
    return false;
  }
  char version[96] = {0};
  if (n.systemDriverVersion && n.systemDriverVersion(version, sizeof version) == kSuccess) {
    n.driverVersion = version;
  }
  n.ready = true;
  n.reason = "NVML ready" + (n.driverVersion.empty() ? std::string() : " (driver " + n.driverVersion + ")");
  return true;
}

bool EnsureOpen() {
  std::lock_guard<std::mutex> lock(g_nvmlMu);
  return EnsureOpenLocked();
}

// ---------------------------------------------------------------------------
// Queries shared by the JS calls and the sampler thread.

struct Proc {
  unsigned pid;
  unsigned long long used;  // kValueNotAvailable when the driver cannot say
};

nvmlReturn_t QueryProcesses(nvmlDevice_t dev, std::vector<Proc>* out) {
  out->clear();
  // Ask with room to spare; on INSUFFICIENT_SIZE NVML says how many there are,
  // and more may start between two calls, so retry a few times.
  unsigned capacity = 32;
  for (int attempt = 0; attempt < 5; attempt++) {
    unsigned count = capacity;
    nvmlReturn_t r;
    if (g_nvml.processesV2) {
      std::vector<ProcessV2> buf(capacity);
      r = g_nvml.processesV2(dev, &count, buf.data());
      if (r == kSuccess) {
        for (unsigned i = 0; i < count && i < capacity; i++) out->push_back({buf[i].pid, buf[i].usedGpuMemory});
        return r;
      }
    } else if (g_nvml.processesV1) {
      std::vector<ProcessV1> buf(capacity);
      r = g_nvml.processesV1(dev, &count, buf.data());
      if (r == kSuccess) {
        for (unsigned i = 0; i < count && i < capacity; i++) out->push_back({buf[i].pid, buf[i].usedGpuMemory});
        return r;
      }
    } else {
      return kErrFunctionNotFound;
    }
    if (r != kErrInsufficientSize) return r;
    capacity = std::max(capacity * 2, count + 8);
  }
  return kErrInsufficientSize;
}

nvmlReturn_t QueryMemory(nvmlDevice_t dev, unsigned long long* total, unsigned long long* used,
                         unsigned long long* free) {
  if (g_nvml.memoryV2) {
    MemoryV2 m{};
    m.version = kMemoryV2Version;
    nvmlReturn_t r = g_nvml.memoryV2(dev, &m);
    if (r == kSuccess) {
      *total = m.total;
      *used = m.used;
      *free = m.free;
      return r;
    }
    // A driver that exports the symbol but not this struct version: use v1.
    if (r != kErrNotSupported && r != kErrFunctionNotFound && r != kErrArgumentVersionMismatch) return r;
  }
  MemoryV1 m{};
  nvmlReturn_t r = g_nvml.memoryV1(dev, &m);
  if (r == kSuccess) {
    *total = m.total;
    *used = m.used;
    *free = m.free;
  }
  return r;
}

double NowMs() {
  using namespace std::chrono;
  return duration<double, std::milli>(system_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------------------
// JS helpers.

Napi::Error NvmlError(Napi::Env env, const std::string& what, nvmlReturn_t r) {
  Napi::Error e = Napi::Error::New(env, what + ": " + ErrorText(r));
  e.Set("code", Napi::String::New(env, ErrorName(r)));
  e.Set("nvmlReturn", Napi::Number::New(env, r));
  return e;
}

Napi::Value Bytes(Napi::Env env, unsigned long long v) {
  // Doubles hold byte counts exactly up to 8 PiB.
  return Napi::Number::New(env, static_cast<double>(v));
}

bool ReadPids(Napi::Env env, Napi::Value v, std::vector<unsigned>* out) {
  out->clear();
  if (v.IsUndefined() || v.IsNull()) return true;
  if (!v.IsArray()) {
    Napi::TypeError::New(env, "pids must be an array of process ids").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value p = a.Get(i);
    double d = p.IsNumber() ? p.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= 4294967295.0 && d == static_cast<double>(static_cast<unsigned long long>(d)))) {
      Napi::TypeError::New(env, "pids must be an array of process ids").ThrowAsJavaScriptException();
      return false;
    }
    out->push_back(static_cast<unsigned>(d));
  }
  return true;
}

// ---------------------------------------------------------------------------
// status(), init(path?), shutdown(), listGpus(), processesOn(index)

Napi::Object StatusObject(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", Napi::Boolean::New(env, g_nvml.ready));
  o.Set("reason", Napi::String::New(env, g_nvml.reason));
  o.Set("library", Napi::String::New(env, g_nvml.path));
  o.Set("driverVersion", g_nvml.driverVersion.empty() ? env.Null() : Napi::String::New(env, g_nvml.driverVersion));
  return o;
}

Napi::Value Status(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(g_nvmlMu);
  EnsureOpenLocked();
  return StatusObject(info.Env());
}

bool StopAllSamplers(int waitMs);

// init(path?): closes NVML (if no sampler still runs) and opens it again, from `path`
// or the default. Tests use it to switch libraries; the loader to honour a setting.
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  if (info.Length() > 0 && !info[0].IsUndefined() && !info[0].IsNull()) {
    if (!info[0].IsString()) {
      Napi::TypeError::New(env, "init(path?): path must be a string").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    path = info[0].As<Napi::String>().Utf8Value();
  }
  if (!StopAllSamplers(2000)) {
    Napi::Error::New(env, "init: a sampler thread did not stop in time").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::lock_guard<std::mutex> lock(g_nvmlMu);
  CloseLocked();
  g_configuredPath = path;
  EnsureOpenLocked();
  return StatusObject(env);
}

Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // A thread stuck in a driver call keeps the library mapped: unloading it under
  // that thread would crash the process, so then NVML is left open.
  if (!StopAllSamplers(2000)) return Napi::Boolean::New(env, false);
  std::lock_guard<std::mutex> lock(g_nvmlMu);
  CloseLocked();
  g_nvml.reason = "NVML closed";
  return Napi::Boolean::New(env, true);
}

Napi::Value ListGpus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array list = Napi::Array::New(env);
  if (!EnsureOpen()) return list;  // no NVML: no GPUs; status() says why
  unsigned count = 0;
  nvmlReturn_t r = g_nvml.deviceCount(&count);
  if (r != kSuccess) {
    NvmlError(env, "nvmlDeviceGetCount", r).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  for (unsigned i = 0; i < count; i++) {
    Napi::Object g = Napi::Object::New(env);
    g.Set("index", Napi::Number::New(env, i));
    std::string name, uuid, error, cc;
    unsigned long long total = 0, used = 0, free = 0;
    int major = 0, minor = 0;
    nvmlDevice_t dev = nullptr;
    // A GPU that cannot be read is still listed, with what went wrong, so the
    // target picker can show it instead of silently dropping it.
    r = g_nvml.handleByIndex(i, &dev);
    if (r != kSuccess) {
      error = "nvmlDeviceGetHandleByIndex: " + ErrorText(r);
    } else {
      char buf[256] = {0};
      if ((r = g_nvml.name(dev, buf, sizeof buf)) == kSuccess) name = buf;
      else error = "nvmlDeviceGetName: " + ErrorText(r);
      char ubuf[96] = {0};
      if ((r = g_nvml.uuid(dev, ubuf, sizeof ubuf)) == kSuccess) uuid = ubuf;
      else if (error.empty()) error = "nvmlDeviceGetUUID: " + ErrorText(r);
      if ((r = QueryMemory(dev, &total, &used, &free)) != kSuccess && error.empty()) {
        error = "nvmlDeviceGetMemoryInfo: " + ErrorText(r);
      }
      if (g_nvml.computeCapability) {
        if ((r = g_nvml.computeCapability(dev, &major, &minor)) == kSuccess) {
          cc = std::to_string(major) + "." + std::to_string(minor);
        } else if (error.empty()) {
          error = "nvmlDeviceGetCudaComputeCapability: " + ErrorText(r);
        }
      }
    }
    g.Set("name", Napi::String::New(env, name));
    g.Set("uuid", Napi::String::New(env, uuid));
    g.Set("totalBytes", Bytes(env, total));
    g.Set("usedBytes", Bytes(env, used));
    g.Set("freeBytes", Bytes(env, free));
    g.Set("computeCapability", Napi::String::New(env, cc));
    // Every architecture from Ampere (sm80) on has 2:4 sparse tensor cores.
    g.Set("sparse24", Napi::Boolean::New(env, !cc.empty() && major >= 8));
    if (!error.empty()) g.Set("error", Napi::String::New(env, error));
    list.Set(i, g);
  }
  return list;
}

bool DeviceArg(const Napi::CallbackInfo& info, const char* fn, unsigned* index, nvmlDevice_t* dev) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, std::string(fn) + "(gpuIndex): gpuIndex must be a number").ThrowAsJavaScriptException();
    return false;
  }
  double d = info[0].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d < 65536 && d == static_cast<double>(static_cast<unsigned>(d)))) {
    Napi::RangeError::New(env, std::string(fn) + ": no GPU " + info[0].ToString().Utf8Value()).ThrowAsJavaScriptException();
    return false;
  }
  *index = static_cast<unsigned>(d);
  if (!EnsureOpen()) {
    Napi::Error::New(env, std::string(fn) + ": no GPU " + std::to_string(*index) + " (" + g_nvml.reason + ")")
        .ThrowAsJavaScriptException();
    return false;
  }
  unsigned count = 0;
  nvmlReturn_t r = g_nvml.deviceCount(&count);
  if (r != kSuccess) {
    NvmlError(env, "nvmlDeviceGetCount", r).ThrowAsJavaScriptException();
    return false;
  }
  if (*index >= count) {
    Napi::RangeError::New(env, std::string(fn) + ": no GPU " + std::to_string(*index) + " (" + std::to_string(count) +
                                   " GPUs)")
        .ThrowAsJavaScriptException();
    return false;
  }
  r = g_nvml.handleByIndex(*index, dev);
  if (r != kSuccess) {
    NvmlError(env, "nvmlDeviceGetHandleByIndex(" + std::to_string(*index) + ")", r).ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

Napi::Value ProcessesOn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unsigned index = 0;
  nvmlDevice_t dev = nullptr;
  if (!DeviceArg(info, "processesOn", &index, &dev)) return env.Undefined();
  std::vector<Proc> procs;
  nvmlReturn_t r = QueryProcesses(dev, &procs);
  if (r != kSuccess) {
    NvmlError(env, "nvmlDeviceGetComputeRunningProcesses(GPU " + std::to_string(index) + ")", r)
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array list = Napi::Array::New(env, procs.size());
  for (size_t i = 0; i < procs.size(); i++) {
    Napi::Object p = Napi::Object::New(env);
    p.Set("pid", Napi::Number::New(env, procs[i].pid));
    p.Set("usedBytes", procs[i].used == kValueNotAvailable ? env.Null() : Bytes(env, procs[i].used));
    list.Set(static_cast<uint32_t>(i), p);
  }
  return list;
}

// ---------------------------------------------------------------------------
// The sampler: a thread that reads NVML at a fixed interval and hands batches of
// samples to JS through a thread-safe function, so the JS thread never waits on
// the driver.

constexpr long long kNone = -1;  // "null" in the delivered objects

struct GpuReading {
  unsigned index;
  long long used;     // kNone when this GPU could not be read
  long long pidUsed;  // kNone when no pids are followed or the driver cannot say
};

struct Sample {
  double tMs;
  std::vector<GpuReading> gpus;
  long long pidUsed;
};

struct Batch {
  std::vector<Sample> samples;
  std::vector<std::string> errors;
  bool final = false;
};

void DeliverBatch(Napi::Env env, Napi::Function cb, std::nullptr_t*, Batch* batch);
using Tsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, Batch, DeliverBatch>;

Napi::Value OrNull(Napi::Env env, long long v) {
  return v == kNone ? env.Null() : Napi::Number::New(env, static_cast<double>(v));
}

void DeliverBatch(Napi::Env env, Napi::Function cb, std::nullptr_t*, Batch* batch) {
  std::unique_ptr<Batch> owned(batch);
  if (env == nullptr || cb.IsEmpty()) return;  // the environment is going away
  Napi::Object o = Napi::Object::New(env);
  Napi::Array samples = Napi::Array::New(env, batch->samples.size());
  for (size_t i = 0; i < batch->samples.size(); i++) {
    const Sample& s = batch->samples[i];
    Napi::Object so = Napi::Object::New(env);
    so.Set("tMs", Napi::Number::New(env, s.tMs));
    Napi::Array gpus = Napi::Array::New(env, s.gpus.size());
    for (size_t g = 0; g < s.gpus.size(); g++) {
      Napi::Object go = Napi::Object::New(env);
      go.Set("index", Napi::Number::New(env, s.gpus[g].index));
      go.Set("usedBytes", OrNull(env, s.gpus[g].used));
      go.Set("pidUsedBytes", OrNull(env, s.gpus[g].pidUsed));
      gpus.Set(static_cast<uint32_t>(g), go);
    }
    so.Set("gpus", gpus);
    so.Set("pidUsedBytes", OrNull(env, s.pidUsed));
    samples.Set(static_cast<uint32_t>(i), so);
  }
  Napi::Array errors = Napi::Array::New(env, batch->errors.size());
  for (size_t i = 0; i < batch->errors.size(); i++) errors.Set(static_cast<uint32_t>(i), batch->errors[i]);
  o.Set("samples", samples);
  o.Set("errors", errors);
  o.Set("final", Napi::Boolean::New(env, batch->final));
  // An exception thrown by the callback surfaces as an uncaught exception in JS;
  // the sampler thread is not affected.
  cb.Call({o});
}

// Whether `pid` is `root` or descends from it, by its chain of parents in /proc.
// Asked only about processes that hold GPU memory, once each: far cheaper than
// re-reading the whole process table to follow a run's tree.
bool DescendsFrom(unsigned pid, unsigned root) {
  for (int depth = 0; depth < 64 && pid > 1; depth++) {
    if (pid == root) return true;
    char path[40];
    std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
    FILE* f = std::fopen(path, "re");
    if (!f) return false;
    char buf[512];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    // The command name (field 2) may hold spaces and ')': count from the last ')'.
    const char* close = std::strrchr(buf, ')');
    char state;
    unsigned ppid;
    if (!close || std::sscanf(close + 1, " %c %u", &state, &ppid) != 2) return false;
    pid = ppid;
  }
  return pid == root;
}

class SamplerCore {
 public:
  SamplerCore(unsigned intervalMs, unsigned batchMs, std::vector<unsigned> pids, unsigned rootPid)
      : interval_(intervalMs), batch_(batchMs), root_(rootPid), pids_(pids.begin(), pids.end()) {}

  // Starts the thread; the core keeps itself alive through `self` until it ends.
  void Start(std::shared_ptr<SamplerCore> self, Tsfn tsfn) {
    tsfn_ = tsfn;
    running_ = true;
    std::thread([self]() { self->Run(); }).detach();
  }

  // The thread sees the request at its next wake-up (within one interval, at most
  // 100 ms): it sleeps without a lock, so that a wake-up costs one system call.
  void RequestStop() { stopping_ = true; }

  bool WaitDone(int ms) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return !running_; });
  }

  bool Running() {
    std::lock_guard<std::mutex> lock(mu_);
    return running_ && !stopping_;
  }

  void SetPids(std::vector<unsigned> pids) {
    std::lock_guard<std::mutex> lock(mu_);
    pids_ = std::unordered_set<unsigned>(pids.begin(), pids.end());
    pidsChanged_ = true;
  }

  // Sleeps until `until` on the monotonic clock (what steady_clock reads on Linux),
  // in steps of at most 100 ms so a stop request is seen soon even at long intervals.
  void SleepUntil(std::chrono::steady_clock::time_point until) {
    using namespace std::chrono;
    for (auto now = steady_clock::now(); now < until && !stopping_; now = steady_clock::now()) {
      auto step = std::min(until, now + milliseconds(100));
      auto ns = duration_cast<nanoseconds>(step.time_since_epoch()).count();
      timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);  // EINTR: the loop goes on
    }
  }

 private:
  // Which call an error came from: each keeps its own last error.
  enum Call { kHandle, kMemory, kProcesses, kCalls };

  struct GpuState {
    unsigned index;
    nvmlDevice_t dev = nullptr;
    nvmlReturn_t lastError[kCalls] = {kSuccess, kSuccess, kSuccess};
    long long lastUsed = kNone;
    std::vector<Proc> procs;
    bool procsValid = false;
    std::chrono::steady_clock::time_point procsAt{}, dirtyUntil{}, handleRetryAt{};
  };

  void Report(std::vector<std::string>* errors, GpuState* g, Call call, nvmlReturn_t r) {
    static const char* const kNames[kCalls] = {"nvmlDeviceGetHandleByIndex", "nvmlDeviceGetMemoryInfo",
                                               "nvmlDeviceGetComputeRunningProcesses"};
    // An error is reported when it starts or changes, not at every tick.
    if (r != g->lastError[call]) {
      if (r != kSuccess) errors->push_back("GPU " + std::to_string(g->index) + ": " + kNames[call] + ": " + ErrorText(r));
      g->lastError[call] = r;
    }
  }

  void Run() {
    using clock = std::chrono::steady_clock;
    std::vector<GpuState> gpus;
    std::vector<std::string> errors;
    unsigned count = 0;
    nvmlReturn_t r = g_nvml.deviceCount(&count);
    if (r != kSuccess) errors.push_back(std::string("nvmlDeviceGetCount: ") + ErrorText(r));
    for (unsigned i = 0; i < count; i++) {
      GpuState g;
      g.index = i;
      r = g_nvml.handleByIndex(i, &g.dev);
      if (r != kSuccess) {
        g.dev = nullptr;
        Report(&errors, &g, kHandle, r);
      }
      gpus.push_back(std::move(g));
    }

    std::vector<Sample> pending;
    auto next = clock::now();
    auto lastFlush = next;
    const auto interval = std::chrono::milliseconds(interval_);
    // Per-process figures change only when a device's total changes, and asking the
    // driver for the process list costs far more than reading the total: so the list
    // is re-read when the total moved (and for a short while after, since the two
    // are not updated at the same instant), and at least every 250 ms regardless.
    const auto procsMaxAge = std::chrono::milliseconds(250);
    const auto settle = std::chrono::milliseconds(std::max(100u, 3 * interval_));

    std::unordered_set<unsigned> pids;
    bool pidsChanged = true;
    while (!stopping_) {
      if (pidsChanged_.exchange(false)) {
        std::lock_guard<std::mutex> lock(mu_);
        pids = pids_;
        pidsChanged = true;
      }

      auto now = clock::now();
      const bool following = !pids.empty() || root_ != 0;
      bool requeried = false;
      Sample s;
      s.tMs = NowMs();
      s.pidUsed = following ? 0 : kNone;
      bool anyRead = false;
      for (GpuState& g : gpus) {
        GpuReading reading{g.index, kNone, kNone};
        if (!g.dev && now >= g.handleRetryAt) {
          // A lost GPU may come back (after a reset); ask again once a second.
          g.handleRetryAt = now + std::chrono::seconds(1);
          r = g_nvml.handleByIndex(g.index, &g.dev);
          if (r != kSuccess) g.dev = nullptr;
          Report(&errors, &g, kHandle, r);
        }
        if (g.dev) {
          unsigned long long total = 0, used = 0, free = 0;
          r = QueryMemory(g.dev, &total, &used, &free);
          Report(&errors, &g, kMemory, r);
          if (r == kSuccess) {
            reading.used = static_cast<long long>(used);
            if (reading.used != g.lastUsed) g.dirtyUntil = now + settle;
            g.lastUsed = reading.used;
          } else {
            g.lastUsed = kNone;
            g.procsValid = false;
            if (r == 15 /* GPU_IS_LOST */) {
              g.dev = nullptr;
              g.handleRetryAt = now + std::chrono::seconds(1);
            }
          }
          if (r == kSuccess && following) {
            if (pidsChanged || !g.procsValid || now <= g.dirtyUntil || now - g.procsAt >= procsMaxAge) {
              nvmlReturn_t pr = QueryProcesses(g.dev, &g.procs);
              g.procsAt = now;
              g.procsValid = pr == kSuccess;
              requeried = true;
              Report(&errors, &g, kProcesses, pr);
            }
            if (g.procsValid) {
              long long sum = 0;
              for (const Proc& p : g.procs) {
                if (!pids.count(p.pid) && !InTree(p.pid)) continue;
                if (p.used == kValueNotAvailable) {
                  sum = kNone;
                  break;
                }
                sum += static_cast<long long>(p.used);
              }
              reading.pidUsed = sum;
            }
          }
        }
        if (following && reading.used != kNone) {
          // A GPU that cannot be read holds none of the run's memory any more; a
          // readable one that cannot say per process makes the total unknown.
          anyRead = true;
          s.pidUsed = (s.pidUsed == kNone || reading.pidUsed == kNone) ? kNone : s.pidUsed + reading.pidUsed;
        }
        s.gpus.push_back(reading);
      }
      if (!anyRead) s.pidUsed = kNone;
      pending.push_back(std::move(s));
      pidsChanged = false;
      if (requeried && root_) PruneTree(gpus);

      now = clock::now();
      if (now - lastFlush >= std::chrono::milliseconds(batch_) || !errors.empty()) {
        Flush(&pending, &errors, false);
        lastFlush = now;
      }
      // Fixed-rate schedule; ticks missed while the driver was slow are skipped,
      // not run back to back.
      next += interval;
      if (next <= now) next = now + interval;
      SleepUntil(next);
    }
    Flush(&pending, &errors, true);
    tsfn_.Release();
    std::lock_guard<std::mutex> lock(mu_);
    running_ = false;
    cv_.notify_all();
  }

  void Flush(std::vector<Sample>* pending, std::vector<std::string>* errors, bool final) {
    if (pending->empty() && errors->empty() && !final) return;
    auto* b = new Batch();
    b->samples.swap(*pending);
    b->errors.swap(*errors);
    b->final = final;
    // The queue is unbounded, so this never blocks; it fails only while the
    // environment is being torn down, and then nobody is listening.
    if (tsfn_.NonBlockingCall(b) != napi_ok) delete b;
  }

  bool InTree(unsigned pid) {
    if (!root_) return false;
    auto it = inTree_.find(pid);
    if (it != inTree_.end()) return it->second;
    bool in = DescendsFrom(pid, root_);
    inTree_.emplace(pid, in);
    return in;
  }

  // Forgets processes no GPU lists any more, so a pid the system reuses later is
  // asked about again.
  void PruneTree(const std::vector<GpuState>& gpus) {
    std::unordered_set<unsigned> listed;
    for (const GpuState& g : gpus) {
      for (const Proc& p : g.procs) listed.insert(p.pid);
    }
    for (auto it = inTree_.begin(); it != inTree_.end();) {
      it = listed.count(it->first) ? std::next(it) : inTree_.erase(it);
    }
  }

  const unsigned interval_, batch_;
  const unsigned root_;  // follow this pid's tree too; 0: none
  std::unordered_map<unsigned, bool> inTree_;  // the sampler thread's own
  std::atomic<bool> stopping_{false};
  std::atomic<bool> pidsChanged_{true};
  std::mutex mu_;  // guards pids_ and running_
  std::condition_variable cv_;  // signals running_ turning false
  bool running_ = false;
  std::unordered_set<unsigned> pids_;
  Tsfn tsfn_;
};

// Every sampler whose thread has not ended, so init/shutdown and the environment's
// teardown can stop them before NVML is unloaded.
std::mutex g_samplersMu;
std::vector<std::weak_ptr<SamplerCore>> g_samplers;

std::vector<std::shared_ptr<SamplerCore>> LiveSamplers() {
  std::lock_guard<std::mutex> lock(g_samplersMu);
  std::vector<std::shared_ptr<SamplerCore>> live;
  std::vector<std::weak_ptr<SamplerCore>> keep;
  for (auto& w : g_samplers) {
    if (auto s = w.lock()) {
      live.push_back(s);
      keep.push_back(w);
    }
  }
  g_samplers.swap(keep);
  return live;
}

bool StopAllSamplers(int waitMs) {
  auto live = LiveSamplers();
  for (auto& s : live) s->RequestStop();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(waitMs);
  bool all = true;
  for (auto& s : live) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (!s->WaitDone(static_cast<int>(std::max<long long>(0, left.count())))) all = false;
  }
  return all;
}

class Sampler : public Napi::ObjectWrap<Sampler> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Sampler",
                       {InstanceMethod<&Sampler::Stop>("stop"), InstanceMethod<&Sampler::SetPids>("setPids"),
                        InstanceAccessor<&Sampler::IsRunning>("running")});
  }

  // new Sampler({intervalMs, batchMs?, pids?, rootPid?}, callback)
  explicit Sampler(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Sampler>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "startSampler({intervalMs, batchMs?, pids?, rootPid?}, callback)").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object opts = info[0].As<Napi::Object>();
    Napi::Value iv = opts.Get("intervalMs");
    double interval = iv.IsNumber() ? iv.As<Napi::Number>().DoubleValue() : -1;
    if (!(interval >= 1 && interval <= 60000)) {
      Napi::RangeError::New(env, "startSampler: intervalMs must be between 1 and 60000").ThrowAsJavaScriptException();
      return;
    }
    Napi::Value bv = opts.Get("batchMs");
    // A live display needs a few updates a second, not one per sample: fewer wake-ups
    // of the JS thread.
    double batch = std::max(interval, 250.0);
    if (!bv.IsUndefined()) {
      batch = bv.IsNumber() ? bv.As<Napi::Number>().DoubleValue() : -1;
      if (!(batch >= 0 && batch <= 600000)) {
        Napi::RangeError::New(env, "startSampler: batchMs must be between 0 and 600000").ThrowAsJavaScriptException();
        return;
      }
    }
    std::vector<unsigned> pids;
    if (!ReadPids(env, opts.Get("pids"), &pids)) return;
    Napi::Value rv = opts.Get("rootPid");
    double root = 0;
    if (!rv.IsUndefined()) {
      root = rv.IsNumber() ? rv.As<Napi::Number>().DoubleValue() : -1;
      if (!(root >= 1 && root <= 4294967295.0 && root == static_cast<double>(static_cast<unsigned long long>(root)))) {
        Napi::TypeError::New(env, "startSampler: rootPid must be a process id").ThrowAsJavaScriptException();
        return;
      }
    }
    if (!EnsureOpen()) {
      Napi::Error::New(env, "startSampler: " + g_nvml.reason).ThrowAsJavaScriptException();
      return;
    }
    core_ = std::make_shared<SamplerCore>(static_cast<unsigned>(interval), static_cast<unsigned>(batch), pids,
                                          static_cast<unsigned>(root));
    Tsfn tsfn = Tsfn::New(env, info[1].As<Napi::Function>(), "membit-nvml-sampler", 0, 1);
    {
      std::lock_guard<std::mutex> lock(g_samplersMu);
      g_samplers.push_back(core_);
    }
    core_->Start(core_, tsfn);
  }

  ~Sampler() override {
    // Collected while running (its owner dropped it): stop rather than sample forever.
    if (core_) core_->RequestStop();
  }

 private:
  // stop(): asks the thread to end and returns at once; the last batch, marked
  // `final`, arrives through the callback. Never waits on the driver.
  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (core_) core_->RequestStop();
    return info.Env().Undefined();
  }

  Napi::Value SetPids(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<unsigned> pids;
    if (!ReadPids(env, info.Length() > 0 ? info[0] : env.Undefined(), &pids)) return env.Undefined();
    if (core_) core_->SetPids(std::move(pids));
    return env.Undefined();
  }

  Napi::Value IsRunning(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), core_ && core_->Running());
  }

  std::shared_ptr<SamplerCore> core_;
};

struct AddonData {
  Napi::FunctionReference samplerClass;
};

Napi::Value StartSampler(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonData* data = env.GetInstanceData<AddonData>();
  std::vector<napi_value> args(info.Length());
  for (size_t i = 0; i < info.Length(); i++) args[i] = info[i];
  return data->samplerClass.New(args);
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->samplerClass = Napi::Persistent(Sampler::Define(env));
  env.SetInstanceData(data);
  // On teardown (extension host reload, worker exit) the threads must not outlive
  // the environment they deliver to.
  env.AddCleanupHook([]() { StopAllSamplers(1000); });
  exports.Set("status", Napi::Function::New(env, Status, "status"));
  exports.Set("init", Napi::Function::New(env, Init, "init"));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown, "shutdown"));
  exports.Set("listGpus", Napi::Function::New(env, ListGpus, "listGpus"));
  exports.Set("processesOn", Napi::Function::New(env, ProcessesOn, "processesOn"));
  exports.Set("startSampler", Napi::Function::New(env, StartSampler, "startSampler"));
  return exports;
}

}  // namespace

NODE_API_MODULE(membit_nvml, InitModule)
