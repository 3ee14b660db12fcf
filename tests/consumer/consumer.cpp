// A C++ program built against the installed libglow, with RAII ownership.
#include <cstdio>
#include <memory>
#include <vector>

#include <glow.h>

struct ModelFree {
  void operator()(glow_model *m) const { glow_model_free(m); }
};

int main() {
  glow_config cfg;
  glow_config_init(&cfg);
  cfg.height = cfg.width = 8;
  cfg.channels = 3;
  cfg.levels = 1;
  cfg.depth = 1;
  cfg.hidden = 4;
  glow_model *raw = nullptr;
  if (glow_model_create(&cfg, &raw) != GLOW_OK) {
    std::fprintf(stderr, "create: %s\n", glow_last_error());
    return 1;
  }
  std::unique_ptr<glow_model, ModelFree> m(raw);
  std::vector<float> x(static_cast<size_t>(glow_model_dim(m.get())), 0.1f);
  float bpd = 0.0f;
  if (glow_bits_per_dim(m.get(), x.data(), nullptr, 1, &bpd) != GLOW_OK) {
    std::fprintf(stderr, "bpd: %s\n", glow_last_error());
    return 1;
  }
  std::printf("C++ consumer: %.3f bits/dim\n", static_cast<double>(bpd));
  return bpd > 0.0f ? 0 : 1;
}
