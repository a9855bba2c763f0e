"""TF-IDF + logistic regression on SST-2, on exactly the split TextData gives the RNN recipe.

Run from the repository root: python benchmarks/tfidf_sst2.py [../shared/data/sst2]
"""

import json
import sys
import time

from longmm.baselines import tfidf_logreg
from longmm.data import TextData

root = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/sst2"
t0 = time.perf_counter()
dm = TextData(root=root, format="table-splits", text_column="sentence")
split = {n: ([s.inputs["text"] for s in v], [s.label for s in v]) for n, v in dm.samples.items()}
result = tfidf_logreg(*split["train"], *split["test"], *split["val"])
result["total_seconds"] = round(time.perf_counter() - t0, 1)
print(json.dumps(result, indent=1))
