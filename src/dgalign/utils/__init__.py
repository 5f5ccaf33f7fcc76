"""Small helpers shared across the package, importing nothing of it but `dgalign.errors`:
atomic writes (`io`), strict-JSON records, seed hashing, argument checks, progress bars, the
device and the seeding of a process (`runtime`)."""
