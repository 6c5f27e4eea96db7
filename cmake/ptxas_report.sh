#!/usr/bin/env bash
# Compiler launcher for the CUDA sources: runs the compile command given as arguments and
# also saves its stderr (the -Xptxas -v resource report) beside the object file, as
# <object>.ptxas.txt, for tests/test_cuda_build.py. The exit status is the compiler's.
out=""
prev=""
for arg in "$@"; do
  [ "$prev" = "-o" ] && out="$arg"
  prev="$arg"
done
report="${out:-ptxas}.ptxas.txt"
"$@" 2>"$report.tmp"
rc=$?
cat "$report.tmp" >&2
mv -f "$report.tmp" "$report"
exit $rc
