/// The indexlab command: verify | replay | export | list | bench | quality | fuzz.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "compare/registry.h"

int main(int argc, char** argv) {
  using namespace indexlab::cli;
  CLI::App app{"indexlab: verify, fuzz and benchmark sparse-attention indexers (DSA, HISA, MISA, MISA-dagger)\n"
               "With no command, runs `indexlab verify` on the built-in workloads."};
  app.require_subcommand(0, 1);
  VerifyArgs va;
  CLI::App* verify = add_verify(app, &va);
  ReplayArgs ra;
  CLI::App* replay = add_replay(app, &ra);
  ExportArgs ea;
  CLI::App* exp = add_export(app, &ea);
  CLI::App* list = app.add_subcommand("list", "List the registered candidates and the built-in workloads");
  FuzzArgs fa;
  CLI::App* fuzz = add_fuzz(app, &fa);
  BenchArgs ba;
  CLI::App* bench = add_bench(app, &ba);
  QualityArgs qa;
  CLI::App* quality = add_quality(app, &qa);
  CLI11_PARSE(app, argc, argv);

  indexlab::compare::register_builtin(&indexlab::compare::Registry::global());
  if (*replay) return run_replay(ra);
  if (*exp) return run_export(ea);
  if (*list) return run_list();
  if (*fuzz) return run_fuzz(fa);
  if (*bench) return run_bench(ba);
  if (*quality) return run_quality(qa);
  (void)verify;
  return run_verify(va);
}
