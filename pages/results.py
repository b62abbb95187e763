"""Results page: metrics of a finished run, confusion matrix, mistakes, and the history of all runs."""

from pathlib import Path

import streamlit as st

from core.runs import list_runs
from pages._charts import confusion, curves, overlay
from pages._ui import init_session, run_picker, runs_dir

init_session()
st.header("4 · Results")
run = run_picker()
if run is None:
    st.stop()
s = run.read_summary()
if "val_accuracy" not in s:
    st.warning(s.get("note", "This run has no results."))
    st.stop()

cols = st.columns(5)
cols[0].metric("Accuracy", f"{s['val_accuracy']:.1%}")
cols[1].metric("Macro F1", f"{s['macro_f1']:.3f}")
cols[2].metric("Macro precision", f"{s['macro_precision']:.3f}")
cols[3].metric("Macro recall", f"{s['macro_recall']:.3f}")
cols[4].metric("Training time", f"{s['train_seconds']:.0f} s")
st.caption(f"{s['backbone']} · freeze {s['freeze']} · best epoch {s['best_epoch']} of {s['epochs_run']} · "
           f"{s['num_train']} train / {s['num_val']} validation images · {s['status']} · {s['device']}")

left, right = st.columns(2)
left.dataframe([{"class": c, "precision": round(m["precision"], 3), "recall": round(m["recall"], 3),
                 "F1": round(m["f1"], 3), "images": m["support"]} for c, m in s["per_class"].items()],
               hide_index=True)
right.plotly_chart(confusion(s["confusion_matrix"], s["classes"]), key="cm_chart")
history = run.read_metrics()
if history:
    c1, c2 = st.columns(2)
    c1.plotly_chart(curves(history, "loss"), key="res_loss")
    c2.plotly_chart(curves(history, "acc"), key="res_acc")

wrong = [p for p in s["predictions"] if p["true"] != p["pred"]]
st.subheader(f"Misclassified validation images ({len(wrong)})")
wrong.sort(key=lambda p: -p["confidence"])  # the most confident mistakes first: often label errors
shown = [p for p in wrong if Path(p["path"]).exists()][:24]
if shown:
    st.image([p["path"] for p in shown], width=140,
             caption=[f"{p['true']} → {p['pred']} ({p['confidence']:.0%})" for p in shown])
elif not wrong:
    st.success("No validation image was misclassified.")

st.subheader("Run history")
rows, curves_by_run = [], {}
for r in list_runs(runs_dir()):
    rs, status = r.read_summary() or {}, r.read_status().get("status")
    rows.append({"run": r.run_id, "status": status, "backbone": rs.get("backbone", ""),
                 "freeze": rs.get("freeze", ""), "accuracy": rs.get("val_accuracy"), "macro F1": rs.get("macro_f1"),
                 "seconds": round(rs["train_seconds"]) if "train_seconds" in rs else None})
    curves_by_run[r.run_id] = r.read_metrics()
st.dataframe(rows, hide_index=True)
chosen = st.multiselect("Compare runs", [r["run"] for r in rows], default=[r["run"] for r in rows][:3],
                        key="compare")
if chosen:
    c1, c2 = st.columns(2)
    c1.plotly_chart(overlay({k: curves_by_run[k] for k in chosen}, "val_acc"), key="cmp_acc")
    c2.plotly_chart(overlay({k: curves_by_run[k] for k in chosen}, "val_loss"), key="cmp_loss")
