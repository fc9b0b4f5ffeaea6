"""Safety evaluation: benchmarks, attacks and judges (registered plugins), metrics, utility, runner."""
