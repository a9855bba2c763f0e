"""Commands of the `longmm` CLI beyond LightningCLI's fit/validate/test/predict."""
