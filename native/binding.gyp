{
  "targets": [
    {
      "target_name": "membit_nvml",
      "sources": ["src/nvml.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      # Node-API 8 (Node 12.22+/14.17+, every Electron VS Code ships) gives thread-safe
      # functions, cleanup hooks and instance data; errors are thrown as JS
      # exceptions explicitly, so C++ exceptions stay off.
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-ldl", "-pthread"]
    }
  ]
}
