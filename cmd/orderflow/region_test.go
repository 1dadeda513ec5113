package main

import (
	"testing"

	"github.com/orderflow/orderflow/internal/adapters/regions"
)

// TestRegionPromotionTextGolden: promote-milestones' text line names the old home
// and the copy lag each in its place (they were swapped: "%!d(string=a)").
func TestRegionPromotionTextGolden(t *testing.T) {
	got := promotionText(regions.Promotion{Region: "b", OldHome: "a", Milestones: 1234, CopyLag: 7, Epoch: 1})
	golden(t, "region-promote.golden", got+"\n")
}
