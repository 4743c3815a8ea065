"""The teachers wing: everything about L2KD's single-task teachers, apart from what identifies one
(l2kd.identity) and the Ray tasks that train them for a grid (l2kd.grid).

- store: the store on disk (keys, manifests, content hashes and damage), `ready(path, modes)` (the
  one readiness check), training a teacher once and making its Seq-KD data, packing its weights;
- loading: a finished teacher as a student uses it (from its folder or from memory);
- seqkd: Seq-KD data, the teacher's decoded training answers (`distil-{mode}.json`) and their checks;
- background: the teachers of one trial (`cli.py train`), trained first or in background processes;
- jobs: the teachers a grid's pending cells need, and the body of the job that trains one.

Modules are imported by name (`from l2kd.teachers.store import TeacherStore`): the methods read
`loading`/`seqkd`, which must not pull in the store (and through it the trial) as they load.
"""
