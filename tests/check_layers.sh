#!/usr/bin/env bash
# The include graph against the layer table of DESIGN.md: a folder includes only itself and the
# folders below it that the table names, the torch-free libraries include no LibTorch, and no
# header includes torch/torch.h. Prints every violation; exit 1 if there is one.
set -u
cd "${1:-$(dirname "$0")/..}" || exit 2

declare -A allowed=(
  [data]="data"
  [net]="net data"
  [runtime]="runtime data"  # data: only the header-only data/generation.h (checked below)
  [ee]="ee runtime data"  # data: the manifest records data::QualityTable (DESIGN.md to follow)
  [accel]="accel runtime data"
  [node]="node runtime ee accel net data"
  [scheduler]="scheduler net data"
  [gateway]="gateway runtime ee net data"
)
torch_free="data net scheduler"
bad=0
for folder in "${!allowed[@]}"; do
  [ -d "$folder" ] || continue
  while IFS=: read -r file line text; do
    dep=$(sed -n 's/^[[:space:]]*#include "\([a-z_]*\)\/.*/\1/p' <<<"$text")
    [ -n "$dep" ] || continue
    case " ${allowed[$folder]} " in
      *" $dep "*) ;;
      *) echo "$file:$line: $folder/ may not include $dep/ (layers: DESIGN.md)"; bad=1 ;;
    esac
  done < <(grep -rnE '^[[:space:]]*#include "[a-z_]+/' "$folder" --include='*.h' --include='*.cpp')
done
# The runtime takes the task's GenerationParams as they are, and nothing else of data/.
if hits=$(grep -rnE '^[[:space:]]*#include "data/' runtime --include='*.h' --include='*.cpp' | grep -v '"data/generation.h"'); then
  echo "$hits" | sed 's/$/  (runtime\/ may include only data\/generation.h)/'
  bad=1
fi
if grep -qE '^[[:space:]]*#include "data/' data/generation.h; then
  echo "data/generation.h: includes data/ headers; the runtime uses it without linking data/"
  bad=1
fi
for folder in $torch_free; do
  [ -d "$folder" ] || continue
  if hits=$(grep -rnE '#include <(torch|ATen|c10)/' "$folder"); then
    echo "$hits" | sed "s/\$/  ($folder\/ is torch-free)/"
    bad=1
  fi
done
if hits=$(grep -rn '#include <torch/torch.h>' --include='*.h' .  | grep -v '^./build'); then
  echo "$hits" | sed 's/$/  (torch\/torch.h in a header costs every includer ~20 s)/'
  bad=1
fi
[ "$bad" -eq 0 ] && echo "layers: every include follows DESIGN.md's table"
exit "$bad"
