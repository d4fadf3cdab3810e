#!/usr/bin/env node
// llama.cpp peer for scripts/bench-cpu-peers.sh: prefill and decode throughput of one GGUF
// on the CPU through node-llama-cpp's prebuilt llama.cpp (no GPU, no build, offline).
//
// Workload (the same as `kiln bench`):
//   prompt  = prompt_len pseudo-random ids, id_i = (i * 2654435761 + 12345) mod vocab
//   prefill = one evaluation of the whole prompt that also picks the next token (greedy)
//   decode  = gen_len evaluations of one token each, each picking the next token (greedy)
// One untimed warm-up run, then the best of --repeat timed runs. Prints one JSON line.
//
// Usage: node bench_peers_llamacpp.mjs --modules DIR --gguf FILE [--prompt-len 128]
//        [--gen-len 64] [--threads 2] [--repeat 3]
// DIR is the folder holding node_modules/node-llama-cpp (scripts/bench-cpu-peers.sh
// installs it into <repo>/.bench-peers).

import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { existsSync } from "node:fs";
import { performance } from "node:perf_hooks";

function parseArgs(argv) {
    const opts = { promptLen: 128, genLen: 64, threads: 2, repeat: 3, modules: null, gguf: null };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const v = argv[i + 1];
        const need = () => {
            if (v === undefined) throw new Error(`${a} needs a value`);
            i++;
            return v;
        };
        switch (a) {
            case "--modules": opts.modules = need(); break;
            case "--gguf": opts.gguf = need(); break;
            case "--prompt-len": opts.promptLen = parseInt(need(), 10); break;
            case "--gen-len": opts.genLen = parseInt(need(), 10); break;
            case "--threads": opts.threads = parseInt(need(), 10); break;
            case "--repeat": opts.repeat = parseInt(need(), 10); break;
            default: throw new Error(`unknown argument ${a}`);
        }
    }
    if (!opts.modules || !opts.gguf) throw new Error("--modules and --gguf are required");
    for (const k of ["promptLen", "genLen", "threads", "repeat"]) {
        if (!Number.isInteger(opts[k]) || opts[k] < 1) throw new Error(`bad --${k}: ${opts[k]}`);
    }
    return opts;
}

const mb = (kib) => (kib * 1024) / 1e6; // resourceUsage().maxRSS is in KiB; report 1e6-byte MB

async function main() {
    const opts = parseArgs(process.argv.slice(2));
    const entry = join(opts.modules, "node_modules", "node-llama-cpp", "dist", "index.js");
    if (!existsSync(entry)) {
        throw new Error(`node-llama-cpp not found at ${entry} (scripts/bench-cpu-peers.sh installs it)`);
    }
    const baselineRss = mb(process.resourceUsage().maxRSS);
    const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);

    const llama = await getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        skipDownload: true,
        maxThreads: opts.threads,
        logLevel: LlamaLogLevel.error,
        progressLogs: false,
    });
    const model = await llama.loadModel({ modelPath: opts.gguf, gpuLayers: 0 });
    const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length
        ?? model.fileInfo.metadata?.llama?.vocab_size;
    if (!Number.isInteger(vocab) || vocab < 1) throw new Error("could not read the vocabulary size from the GGUF");

    const ctxSize = Math.ceil((opts.promptLen + opts.genLen + 1) / 256) * 256;
    const context = await model.createContext({
        contextSize: ctxSize,
        batchSize: Math.max(opts.promptLen, 1),
        sequences: 1,
        threads: { ideal: opts.threads, min: opts.threads },
    });
    const sequence = context.getSequence();

    const prompt = [];
    for (let i = 0n; i < BigInt(opts.promptLen); i++) {
        prompt.push(Number((i * 2654435761n + 12345n) % BigInt(vocab)));
    }
    const greedy = { generateNext: { token: true, options: { temperature: 0 } } };

    async function runOnce() {
        await sequence.clearHistory();
        const items = prompt.map((t, i) => (i === prompt.length - 1 ? [t, greedy] : t));
        const t0 = performance.now();
        const out = await sequence.controlledEvaluate(items);
        let next = out[prompt.length - 1]?.next?.token;
        const prefill = (performance.now() - t0) / 1e3;
        if (next == null) throw new Error("prefill produced no token");
        const generated = [next];
        const t1 = performance.now();
        for (let i = 0; i < opts.genLen; i++) {
            const o = await sequence.controlledEvaluate([[next, greedy]]);
            next = o[0]?.next?.token;
            if (next == null) throw new Error(`decode step ${i} produced no token`);
            generated.push(next);
        }
        const decode = (performance.now() - t1) / 1e3;
        return { prefill, decode, generated };
    }

    await runOnce(); // warm-up
    let bestPrefill = Infinity;
    let bestDecode = Infinity;
    let generated = [];
    for (let r = 0; r < opts.repeat; r++) {
        const run = await runOnce();
        bestPrefill = Math.min(bestPrefill, run.prefill);
        bestDecode = Math.min(bestDecode, run.decode);
        generated = run.generated;
    }
    const result = {
        engine: "llama.cpp",
        runtime: "node-llama-cpp@3.22.1 prebuilt CPU (@node-llama-cpp/linux-x64)",
        gguf: opts.gguf,
        weights: "Q4_1 as stored",
        threads: opts.threads,
        context_threads: context.currentThreads ?? null,
        context_size: context.contextSize,
        batch_size: context.batchSize,
        flash_attention: context.flashAttention ?? null,
        vocab_size: vocab,
        prompt_len: opts.promptLen,
        gen_len: opts.genLen,
        repeat: opts.repeat,
        prefill_tokens_per_sec: opts.promptLen / bestPrefill,
        decode_tokens_per_sec: opts.genLen / bestDecode,
        peak_rss_mb: mb(process.resourceUsage().maxRSS),
        baseline_rss_mb: baselineRss,
        first_tokens: generated.slice(0, 8),
        method: "controlledEvaluate: prompt in one call (greedy next token); then gen_len one-token calls; best of repeat after 1 warm-up",
    };
    await context.dispose();
    await model.dispose();
    await llama.dispose();
    process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((err) => {
    process.stderr.write(`bench_peers_llamacpp: ${err?.stack ?? err}\n`);
    process.exit(1);
});
