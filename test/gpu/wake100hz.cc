// The floor under any 100 Hz sampler thread: a thread that only wakes up every
// 10 ms and does nothing else, timed two ways (a condition variable with a
// deadline, as std::thread code usually waits; clock_nanosleep to an absolute time,
// as the addon waits). Prints {"mode", "percentOfOneCore"} as JSON.
//   wake100hz cv|nanosleep SECONDS
#include <time.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const bool cv = !std::strcmp(argv[1], "cv");
  const int ticks = std::atoi(argv[2]) * 100;
  timespec c0, c1;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
  auto t0 = std::chrono::steady_clock::now();
  std::thread th([&] {
    std::mutex mu;
    std::condition_variable var;
    auto next = std::chrono::steady_clock::now();
    for (int i = 0; i < ticks; i++) {
      next += std::chrono::milliseconds(10);
      if (cv) {
        std::unique_lock<std::mutex> lock(mu);
        var.wait_until(lock, next);
      } else {
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next.time_since_epoch()).count();
        timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
      }
    }
  });
  th.join();
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
  double cpu = (c1.tv_sec - c0.tv_sec) * 1e3 + (c1.tv_nsec - c0.tv_nsec) / 1e6;
  double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("{\"mode\":\"%s\",\"wallMs\":%.1f,\"cpuMs\":%.2f,\"percentOfOneCore\":%.3f}\n", argv[1], wall, cpu,
              100 * cpu / wall);
  return 0;
}
