"""The foundation every layer uses: storage (atomic writes, locks, hashes), the name → class registrar, the
environment and device checks, the precision policy, progress lines, process groups, the packaged resources."""
