# Data stages: JSB chorales -> chords -> rendered notes -> MusicSlots datasets (+ a figure per dataset), and the
# multi-stem audio of the composable-representations side.


rule fetch_jsb:
    input: **inputs("fetch_jsb")
    output: **outputs("fetch_jsb")
    params: **params("fetch_jsb")
    log: step_log("fetch_jsb")
    shell: command("fetch_jsb")


rule chords:
    input: **inputs("chords")
    output: **outputs("chords")
    params: **params("chords")
    log: step_log("chords")
    shell: command("chords")


rule render:
    input: **inputs("render")
    output: **outputs("render")
    params: **params("render")
    threads: 4
    log: step_log("render")
    shell: command("render")


rule features:
    input: **inputs("features")
    output: **outputs("features")
    params: **params("features")
    log: step_log("features")
    shell: command("features")


rule figures:
    input: **inputs("figures")
    output: **outputs("figures")
    params: **params("figures")
    log: step_log("figures")
    shell: command("figures")


rule fetch_jsb16:
    input: **inputs("fetch_jsb16")
    output: **outputs("fetch_jsb16")
    params: **params("fetch_jsb16")
    log: step_log("fetch_jsb16")
    shell: command("fetch_jsb16")


rule stems:
    input: **inputs("stems")
    output: **outputs("stems")
    params: **params("stems")
    threads: 4
    log: step_log("stems")
    shell: command("stems")
