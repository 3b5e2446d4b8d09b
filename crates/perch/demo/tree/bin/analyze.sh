#!/bin/sh
# A shell tool stored in the repository: summarise the data files next to it.
dir=$(dirname "$0")/../data
for f in "$dir"/*; do
  printf '%s %s bytes\n' "$(basename "$f")" "$(wc -c < "$f" | tr -d ' ')"
done
