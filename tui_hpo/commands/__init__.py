"""The commands that read a finished or running study, one module per concern; `tui_hpo.cli`
registers them on the `tui-hpo` group."""
