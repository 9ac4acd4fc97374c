"""Codec throughput on the current device: encoding and decoding 7-s chunks (what caching codes and the
reconstruction table cost) and training steps of the trained-codec alternative. Writes a JSON record named after
the device into benchmarks/.

    python benchmarks/codec_throughput.py [--bandwidth 24] [--batch 8] [--train-batch 32] [--out benchmarks/]

Synthetic audio (the speed does not depend on it); the EnCodec 24 kHz architecture with fresh codebooks
(initialised by k-means on 8 one-second crops, as training does; timed apart). The timed training step is the real one
(train/codec.py's loss: waveform L1 + multi-scale mel + commitment, backward, clipping, Adam) on 1-s crops.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from benchlib import device_name, timed, write_record

from musicdecomp.device import pick_device
from musicdecomp.models.encodec import build_encodec, codes_to_latent, encode_codes, latent_to_audio
from musicdecomp.train.codec import INIT_CROPS, multiscale_mel_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bandwidth", type=float, default=24.0)
    p.add_argument("--batch", type=int, default=8, help="7-s chunks per encoder/decoder call")
    p.add_argument("--train-batch", type=int, default=32, help="1-s crops per training step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(Path(__file__).parent))
    args = p.parse_args()
    device = pick_device(args.device)
    name = device_name(device)
    torch.manual_seed(0)
    model = build_encodec(args.bandwidth).to(device)
    t = time.perf_counter()
    with torch.no_grad():
        model.train()
        model.quantizer(model.encoder(torch.randn(INIT_CROPS, 1, 24000, device=device) * 0.1),
                        model.frame_rate, model.bandwidth)
    kmeans = time.perf_counter() - t
    model.eval()
    x = torch.randn(args.batch, 168000, device=device) * 0.05
    codes = encode_codes(model, x)
    enc = timed(lambda: encode_codes(model, x), args.repeats, device)
    dec = timed(lambda: latent_to_audio(model, codes_to_latent(model, codes)), args.repeats, device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    crops = torch.randn(args.train_batch, 24000, device=device) * 0.05

    def train_step():
        q = model.quantizer(model.encoder(crops[:, None]), model.frame_rate, model.bandwidth)
        y = model.decoder(q.quantized)[:, 0, : crops.shape[-1]]
        loss = 0.1 * (y - crops).abs().mean() + multiscale_mel_loss(y, crops) + q.penalty
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step = timed(train_step, args.repeats, device)
    record = {"device": name, "torch": torch.__version__, "bandwidth_kbps": args.bandwidth,
              "codebook_kmeans_init_s": round(kmeans, 1),
              "encode_s_per_7s_signal": round(enc / args.batch, 4), "encode_x_realtime": round(7 * args.batch / enc, 1),
              "decode_s_per_7s_signal": round(dec / args.batch, 4), "decode_x_realtime": round(7 * args.batch / dec, 1),
              "train_batch": args.train_batch, "train_step_s": round(step, 3),
              "hours_per_100k_train_steps": round(step * 1e5 / 3600, 1), "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(record, indent=2))
    print(f"-> {write_record(args.out, 'codec_throughput', name, record)}")


if __name__ == "__main__":
    main()
