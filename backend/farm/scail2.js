// SPDX-License-Identifier: GPL-3.0-or-later
//
// Flamenco 3 job type "scail2": SCAIL-2 generations of a farm folder written by
// `python -m backend farm bundle`, one task per bundle (a shot or a character).
// A shot's segments are never split over tasks: each continues from the last
// frames of the one before, so only whole bundles run in parallel.
//
// Install: copy this file into the `scripts/` folder beside the flamenco-manager
// executable and restart the Manager. Define the Manager variables
// `scail2_python` (the backend's Python), `scail2_backend` (the folder holding
// the backend package) and `scail2_weights` (the weights folder) for each
// platform in flamenco-manager.yaml, and add `scail2` to the `task_types` of the
// workers that have a GPU, the backend and the weights. Submit the farm folder's
// flamenco-job.json to the Manager's API (POST /api/v3/jobs).
//
// Tested only under Node with a stand-in for the Manager's `author` API
// (tests/backend/farm/test_flamenco_job.py), not on a real Manager.

// `python -c BOOTSTRAP BACKEND_DIR farm run ...`: the same as backend/farm/templates.py's BOOTSTRAP.
const BOOTSTRAP = "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module('backend', run_name='__main__')";
const BUNDLE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

const JOB_TYPE = {
    label: "SCAIL-2",
    description: "SCAIL-2 character animation, one task per shot or character bundle",
    settings: [
        { key: "farm_dir", type: "string", subtype: "dir_path", required: true,
          description: "The farm folder written by `python -m backend farm bundle`" },
        { key: "shots", type: "string", required: true,
          description: "The bundles to run, comma-separated (bundle folder names in the farm folder)" },
        { key: "python", type: "string", default: "{scail2_python}", visible: "submission",
          description: "The SCAIL-2 backend's Python on the workers" },
        { key: "backend_dir", type: "string", default: "{scail2_backend}", visible: "submission",
          description: "The folder holding the backend package on the workers" },
        { key: "model", type: "string", default: "scail2", choices: ["scail2", "tiny"], visible: "submission",
          description: "scail2: the weights folder; tiny: the built-in test profile" },
        { key: "weights", type: "string", default: "{scail2_weights}", visible: "submission",
          description: "The SCAIL-2 weights folder on the workers" },
        { key: "device", type: "string", default: "cuda", visible: "submission",
          description: "cuda, cuda:1 or cpu" },
        { key: "storage", type: "string", default: "bf16", choices: ["bf16", "fp8"], visible: "submission",
          description: "Weight storage (fp8 halves memory)" },
        { key: "offload", type: "string", default: "none", choices: ["none", "model", "group"], visible: "submission",
          description: "Keep weights in CPU memory" },
        { key: "extra_args", type: "string", default: "", visible: "submission",
          description: "More generate options, as one line" },
    ],
};

function bundleNames(shots) {
    const names = `${shots || ""}`.split(",").map((name) => name.trim()).filter((name) => name.length > 0);
    if (names.length === 0) {
        throw "the scail2 job names no bundles (setting 'shots')";
    }
    for (const name of names) {
        if (!BUNDLE_NAME.test(name)) {
            throw `'${name}' is not a bundle name`;
        }
    }
    return names;
}

function compileJob(job) {
    const settings = job.settings;
    const farmDir = `${settings.farm_dir}`.replace(/[\\/]+$/, "");
    if (!farmDir) {
        throw "the scail2 job has no farm folder (setting 'farm_dir')";
    }
    for (const name of bundleNames(settings.shots)) {
        const task = author.Task(`scail2-${name}`, "scail2");
        task.addCommand(author.Command("exec", {
            exe: settings.python,
            args: [
                "-c", BOOTSTRAP, settings.backend_dir, "farm", "run",
                "--model", settings.model, "--weights", settings.weights, "--device", settings.device,
                "--storage", settings.storage, "--offload", settings.offload, "--extra", settings.extra_args || "",
                `${farmDir}/${name}`,
            ],
        }));
        job.addTask(task);
    }
}
