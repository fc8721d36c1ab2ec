"""The experiment notebook's machinery: sweeps of run configs x seeds (``sweep``) and comparisons across
their runs. Modules are imported by name (``from rlvr_lab.lab.sweep import run_sweep``) so that this
package loads nothing on its own."""
