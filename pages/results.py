"""Results page: metrics of a finished run (validation and test), confusion matrix, mistakes, run history."""

from pathlib import Path

import streamlit as st

from core.analysis.predictions import load_predictions
from core.config import TrainConfig
from core.runs import SplitReport, list_runs
from pages._charts import confusion, curves, overlay, task_curves
from pages._ui import init_session, run_picker, runs_dir

init_session()
st.header("Results")
run = run_picker()
if run is None:
    st.stop()
s = run.read_summary()
if not s.has_results:
    st.warning(s.note or "This run has no results.")
    st.stop()

split = "validation"
if s.test is not None:
    split = st.radio("Evaluated on", ["validation", "test"], horizontal=True, key="res_split",
                     help="Validation chose the best epoch; the test split was only used once, at the end, with "
                          "the best weights: it is the fairer estimate of accuracy on new images.")
report, classes = (s.test if split == "test" else s.val), s.classes
if s.tasks:  # multi-task run: every task in a table, one task's details at a time
    key = "test" if split == "test" else "val"
    st.dataframe([{"task": k, "accuracy": round(t[key]["accuracy"], 4), "macro F1": round(t[key]["macro_f1"], 3),
                   "macro precision": round(t[key]["macro_precision"], 3),
                   "balanced accuracy": round(t[key]["macro_recall"], 3), "images": t[key]["num"],
                   "loss weight": round(t["weight"], 3), "bundle": f"tasks/{k}/bundle/"}
                  for k, t in s.tasks.items() if t.get(key)], hide_index=True)
    st.caption("Each task is also a run of its own in the list above (\"· task NAME\"): its calibration, "
               "Inspect, Predict and Export.")
    task = st.radio("Task", [k for k, t in s.tasks.items() if t.get(key)], horizontal=True, key="res_task")
    report, classes = SplitReport.from_dict(s.tasks[task][key]), s.tasks[task]["classes"]
cols = st.columns(5)
cols[0].metric("Accuracy", f"{report.accuracy:.1%}")
cols[1].metric("Balanced accuracy", f"{report.balanced_accuracy:.1%}",
               help="The mean of the per-class recalls: every class counts the same however many images it has. "
                    "Far below accuracy = the small classes are missed.")
cols[2].metric("Macro F1", f"{report.macro_f1:.3f}")
cols[3].metric("Macro precision", f"{report.macro_precision:.3f}")
cols[4].metric("Training time", f"{s.train_seconds:.0f} s")
test_text = f" · test accuracy {s.test.accuracy:.1%} on {s.test.num} images" if s.test else ""
st.caption(f"{s.backbone} · freeze {s.freeze} · best epoch {s.best_epoch} of {s.epochs_run} · {s.num_train} train / "
           f"{s.val.num} validation images{test_text} · {s.status} · {s.device}")
if s.lineage:
    st.caption("Lineage · " + " → ".join(s.lineage))
for note in s.notes:
    st.info(note)
leak = s.leakage or {}
if leak.get("leaked_val") or leak.get("leaked_test"):
    st.warning(f"Leakage: {leak.get('leaked_val', 0)} validation and {leak.get('leaked_test', 0)} test image(s) have "
               f"a copy (exact, or resized, re-encoded, cropped or mirrored) in the training set, so these scores "
               f"overstate accuracy on new photos. "
               f"The Data page lists them; the Inspect page shows the groups.")

left, right = st.columns(2)
left.dataframe([{"class": c, "precision": round(m["precision"], 3), "recall": round(m["recall"], 3),
                 "F1": round(m["f1"], 3), "images": m["support"]} for c, m in report.per_class.items()],
               hide_index=True)
right.plotly_chart(confusion(report.confusion_matrix, classes), key="cm_chart")
history = run.read_metrics()
if history:
    c1, c2 = st.columns(2)
    c1.plotly_chart(curves(history, "loss"), key="res_loss")
    c2.plotly_chart(curves(history, "acc"), key="res_acc")
    if history[-1].get("tasks"):
        c1.plotly_chart(task_curves(history, "loss"), key="res_task_loss")
        c2.plotly_chart(task_curves(history, "acc"), key="res_task_acc")

preds = load_predictions(run.predictions)
outputs = preds.splits.get("test" if split == "test" else "val") if preds else None
if outputs is not None:
    root = Path(TrainConfig.load(run.config).data)  # the run's own record: the dataset on this server
    wrong = [i for i in range(len(outputs.labels)) if outputs.predicted[i] != outputs.labels[i]]
    wrong.sort(key=lambda i: -outputs.probs[i].max())  # the most confident mistakes first: often label errors
    st.subheader(f"Misclassified {split} images ({len(wrong)})")
    shown = [i for i in wrong if (root / outputs.paths[i]).is_file()][:24]
    if shown:
        st.image([str(root / outputs.paths[i]) for i in shown], width=140,
                 caption=[f"{outputs.paths[i]}: {s.classes[outputs.labels[i]]} → {s.classes[outputs.predicted[i]]}"
                          f" ({outputs.probs[i].max():.0%})" for i in shown])
    elif not wrong:
        st.success(f"No {split} image was misclassified.")

st.subheader("Run history")
rows, curves_by_run = [], {}
for r in list_runs(runs_dir()):
    rs = r.read_summary()
    rows.append({"run": r.run_id, "status": str(r.read_status()["status"]), "backbone": rs.backbone if rs else "",
                 "freeze": rs.freeze if rs else "", "accuracy": rs.val_accuracy if rs else None,
                 "test accuracy": rs.test.accuracy if rs and rs.test else None,
                 "balanced accuracy": rs.val.balanced_accuracy if rs and rs.val else None,
                 "macro F1": rs.val.macro_f1 if rs and rs.val else None,
                 "tasks": ", ".join(f"{k} {t['val']['accuracy']:.1%}" for k, t in (rs.tasks or {}).items()
                                    if t.get("val")) if rs else "",
                 "seconds": round(rs.train_seconds) if rs else None})
    curves_by_run[r.run_id] = r.read_metrics()
st.dataframe(rows, hide_index=True)
chosen = st.multiselect("Compare runs", [r["run"] for r in rows], default=[r["run"] for r in rows][:3],
                        key="compare")
if chosen:
    c1, c2 = st.columns(2)
    c1.plotly_chart(overlay({k: curves_by_run[k] for k in chosen}, "val_acc"), key="cmp_acc")
    c2.plotly_chart(overlay({k: curves_by_run[k] for k in chosen}, "val_loss"), key="cmp_loss")
