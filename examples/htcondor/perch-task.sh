#!/bin/sh
# HTCondor job wrapper (UNTESTED, see perch.sub): runs task $1 under perch from the job's
# scratch directory, where HTCondor put perch, site.conf and the public key.
set -e
# File transfer may not keep the execute bit of an input file.
chmod +x ./perch
exec ./perch run --config site.conf --alien-cache "${PERCH_ALIEN_CACHE:?set in perch.sub}" \
    -- sh /cvmfs/sw.example.org/bin/task.sh "$1"
