package processors

// Each rule's recompute on its own, for the tests of package processors_test: the product
// reaches them only through CatchUp.
var (
	RecomputeMilestones     = recomputeMilestones
	RecomputeWeeklyComments = recomputeWeeklyComments
)
