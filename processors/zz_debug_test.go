package processors_test

import (
	"math/rand/v2"
	"testing"
)

func TestZZDebug(t *testing.T) {
	h := newPinHistory(true)
	rng := rand.New(rand.NewPCG(154315043934583505, 1))
	for step := range 40 {
		h.gen(rng, step)
	}
	for _, tr := range h.tracks {
		s := h.track[tr]
		t.Logf("track %d %+v owner %+v comment %+v", tr, s, h.user[s.owner], h.comment[s.pinned])
	}
}

func TestZZCount(t *testing.T) {
	for _, sticky := range []bool{false, true} {
		seed := uint64(18228643252857882192)
		if sticky {
			seed = 154315043934583505
		}
		h := newPinHistory(sticky)
		rng := rand.New(rand.NewPCG(seed, 1))
		earned := map[[2]int64]bool{}
		for step := range 40 {
			h.gen(rng, step)
			for _, tr := range h.tracks {
				if h.pays(tr) {
					earned[[2]int64{h.comment[h.track[tr].pinned].user, tr}] = true
				}
			}
		}
		t.Logf("sticky=%v earned %d", sticky, len(earned))
	}
}

func TestZZWhy(t *testing.T) {
	h := newPinHistory(true)
	rng := rand.New(rand.NewPCG(154315043934583505, 1))
	for step := range 40 {
		ws := h.gen(rng, step)
		for _, w := range ws {
			if w.change != nil {
				t.Logf("step %d %s %v %v", step, w.change.table, w.change.op, w.change.cols)
			}
		}
	}
}
