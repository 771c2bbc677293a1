"""Nested batches, the 0.2 way. pocoflow 0.2 cannot put a Flow inside a Flow (a
Flow is not a Node there), so its users ran a per-item sub-flow from inside a node:
for each class of a school, a small grading Flow runs on its own Store."""

import os

from pocoflow import Flow, Node, Store

SCHOOL = {
    "class_a": {"student1": [85, 92, 78], "student2": [90, 88, 95]},
    "class_b": {"student3": [70, 65, 80], "student4": [60, 75, 72], "student5": [99, 98, 97]},
}


def write_school(root):
    for class_name, students in SCHOOL.items():
        os.makedirs(os.path.join(root, class_name), exist_ok=True)
        for student, grades in students.items():
            with open(os.path.join(root, class_name, f"{student}.txt"), "w") as f:
                f.write("\n".join(str(g) for g in grades) + "\n")


# ── the inner flow: grade one class ─────────────────────────────────────────

class LoadGrades(Node):
    def prep(self, store):
        return store["class_dir"]

    def exec(self, class_dir):
        grades = {}
        for filename in sorted(os.listdir(class_dir)):
            with open(os.path.join(class_dir, filename)) as f:
                grades[filename[:-4]] = [int(line) for line in f if line.strip()]
        return grades

    def post(self, store, class_dir, grades):
        store["grades"] = grades
        return "average"


class AverageGrades(Node):
    def prep(self, store):
        return store["grades"]

    def exec(self, grades):
        return {student: round(sum(g) / len(g), 1) for student, g in grades.items()}

    def post(self, store, grades, averages):
        store["averages"] = averages
        store["class_average"] = round(sum(averages.values()) / len(averages), 1)
        return "done"


def grade_class(class_dir):
    load, average = LoadGrades(), AverageGrades()
    load.then("average", average)
    inner = Flow(start=load, flow_name="grade_class")
    inner.on("flow_end", lambda steps, store:
             print(f"    graded {store['class_dir']} in {steps} steps"))
    return inner.run(Store(data={"class_dir": class_dir}, name="class"))


# ── the outer flow: every class of the school ───────────────────────────────

class ListClasses(Node):
    def prep(self, store):
        return store["school_dir"]

    def exec(self, school_dir):
        return sorted(d for d in os.listdir(school_dir)
                      if os.path.isdir(os.path.join(school_dir, d)))

    def post(self, store, school_dir, classes):
        store["classes"] = classes
        return "grade"


class GradeEveryClass(Node):
    """Runs the inner flow once per class, from exec."""

    def prep(self, store):
        return [os.path.join(store["school_dir"], c) for c in store["classes"]]

    def exec(self, class_dirs):
        results = {}
        for class_dir in class_dirs:
            inner_store = grade_class(class_dir)
            results[os.path.basename(class_dir)] = {
                "averages": inner_store["averages"],
                "class_average": inner_store["class_average"],
            }
        return results

    def post(self, store, class_dirs, results):
        store["results"] = results
        return "report"


class SchoolReport(Node):
    """Re-grades the best class from post, to run a sub-flow from there too."""

    def prep(self, store):
        return store["results"]

    def exec(self, results):
        return max(results, key=lambda c: results[c]["class_average"])

    def post(self, store, results, best):
        for class_name, result in results.items():
            print(f"{class_name}: class average {result['class_average']}")
            for student, avg in result["averages"].items():
                print(f"  {student}: {avg}")
        check = grade_class(os.path.join(store["school_dir"], best))
        print(f"best class: {best} (re-checked: {check['class_average']})")
        store["best_class"] = best
        return "done"


def main():
    write_school("school")
    listing, grading, report = ListClasses(), GradeEveryClass(), SchoolReport()
    listing.then("grade", grading)
    grading.then("report", report)
    store = Store(data={"school_dir": "school", "classes": [], "results": {}}, name="school")
    trail = []
    outer = Flow(start=listing, flow_name="school")
    outer.on("node_start", lambda name, store: trail.append(name))
    outer.run(store)
    print("outer trail:", trail)
    print("best:", store["best_class"])


if __name__ == "__main__":
    main()
