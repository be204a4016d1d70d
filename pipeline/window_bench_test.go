package pipeline

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/challenge-stream/challenge-stream/replication"
)

// blocks returns n transactions of perTx plays each on tracks drawn from 1..tracks, as a block
// indexer commits them.
func blocks(n, perTx int, tracks int64) []*replication.Transaction {
	rng := rand.New(rand.NewPCG(1, 2))
	txs := make([]*replication.Transaction, n)
	var id int64
	for i := range txs {
		played := make([]int64, perTx)
		for j := range played {
			played[j] = 1 + rng.Int64N(tracks)
		}
		id += int64(perTx)
		txs[i] = tx(pglogrepl.LSN(1000*(i+1)), played, id, nil, 0)
		txs[i].CommitTime = time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)
	}
	return txs
}

// BenchmarkWindowAdd merges 100-play transactions into a window, as the stream does for every
// committed block, starting a new window after 500 of them (a busy second). Run with
//
//	go test ./pipeline/ -run '^$' -bench Window
func BenchmarkWindowAdd(b *testing.B) {
	txs := blocks(500, 100, 50_000)
	now := time.Now()
	w := newWindow(registryPlan(), nil)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if i == len(txs) {
			w, i = newWindow(registryPlan(), nil), 0
		}
		w.add(txs[i], now)
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/play")
}

// BenchmarkWindowAddSameTracks merges transactions whose tracks the window already holds: the
// steady state of a window over a popular catalogue. It should not allocate.
func BenchmarkWindowAddSameTracks(b *testing.B) {
	txs := blocks(8, 100, 500)
	now := time.Now()
	w := newWindow(registryPlan(), nil)
	for _, tx := range txs {
		w.add(tx, now)
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		w.add(txs[i%len(txs)], now)
		i++
	}
}

// BenchmarkWindowAddHuge merges one transaction that touched 50,000 distinct tracks (what a
// 1,000,000-row transaction reduces to) into an empty window.
func BenchmarkWindowAddHuge(b *testing.B) {
	tx := blocks(1, 200_000, 50_000)[0]
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		w := newWindow(registryPlan(), nil)
		w.add(tx, now)
	}
}

// BenchmarkWindowAddEmpty merges a transaction that changed nothing of ours (only its LSN
// matters). It must not allocate.
func BenchmarkWindowAddEmpty(b *testing.B) {
	tx := tx(42, nil, 0, nil, 0)
	now := time.Now()
	w := newWindow(registryPlan(), nil)
	b.ReportAllocs()
	for b.Loop() {
		w.add(tx, now)
	}
}
