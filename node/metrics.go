package node

import (
	"time"

	"github.com/fedrank/fedrank/storage"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a runtime's Prometheus metrics, all named fedrank_*. A nil
// *Metrics records nothing.
type Metrics struct {
	round            prometheus.Gauge
	roundsClosed     *prometheus.CounterVec
	roundSeconds     prometheus.Histogram
	updatesAccepted  prometheus.Counter
	updatesRejected  *prometheus.CounterVec
	messagesRejected *prometheus.CounterVec
	messagesIn       *prometheus.CounterVec
	messagesOut      *prometheus.CounterVec
	bytesIn          prometheus.Counter
	bytesOut         prometheus.Counter
	sendFailures     *prometheus.CounterVec
	trainSeconds     prometheus.Histogram
	trainFailures    prometheus.Counter
	persistSeconds   prometheus.Histogram
	silences         prometheus.Counter
	aggregatorSilent prometheus.Gauge
	recovered        prometheus.Counter
	roundUpdates     prometheus.Gauge
	accuracy         prometheus.Gauge
	loss             prometheus.Gauge
}

// NewMetrics creates the runtime's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		round: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedrank_round",
			Help: "The open round (aggregator) or the last round announced (trainer)."}),
		roundsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedrank_rounds_closed_total",
			Help: "Rounds closed by this aggregator, by whether the model advanced."}, []string{"advanced"}),
		roundSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fedrank_round_seconds",
			Help: "Time from a round's announcement to its close (aggregator).", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
		updatesAccepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedrank_updates_accepted_total",
			Help: "Updates accepted (aggregator)."}),
		updatesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedrank_updates_rejected_total",
			Help: "Updates rejected, by reason (aggregator)."}, []string{"reason"}),
		messagesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedrank_messages_rejected_total",
			Help: "Received messages dropped before the protocol saw them, by reason."}, []string{"reason"}),
		messagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedrank_messages_received_total",
			Help: "Protocol messages received, by kind."}, []string{"kind"}),
		messagesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedrank_messages_sent_total",
			Help: "Protocol messages sent, by kind (a broadcast counts once)."}, []string{"kind"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedrank_bytes_received_total",
			Help: "Bytes of protocol messages received."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedrank_bytes_sent_total",
			Help: "Bytes of protocol messages sent (a broadcast counts once)."}),
		sendFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedrank_send_failures_total",
			Help: "Sends and broadcasts that failed, by message kind."}, []string{"kind"}),
		trainSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fedrank_train_seconds",
			Help: "Local training time (trainer).", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		trainFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedrank_train_failures_total",
			Help: "Local training runs that failed (trainer)."}),
		persistSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fedrank_persist_seconds",
			Help: "Time to make a Persist action durable.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		silences: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedrank_aggregator_silences_total",
			Help: "Times the aggregator was silent for longer than the silence timeout (trainer)."}),
		aggregatorSilent: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedrank_aggregator_silent",
			Help: "1 while the aggregator has been silent for longer than the silence timeout (trainer)."}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedrank_updates_recovered_total",
			Help: "Accepted updates of the open round restored from the store at start (aggregator)."}),
		roundUpdates: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedrank_round_updates",
			Help: "Updates accepted in the open round, restored ones included (aggregator)."}),
		accuracy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedrank_model_accuracy",
			Help: "Accuracy of the last evaluated global model on this peer's test set."}),
		loss: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedrank_model_loss",
			Help: "Loss of the last evaluated global model on this peer's test set."}),
	}
	if reg != nil {
		reg.MustRegister(m.round, m.roundsClosed, m.roundSeconds, m.updatesAccepted, m.updatesRejected,
			m.messagesRejected, m.messagesIn, m.messagesOut, m.bytesIn, m.bytesOut, m.sendFailures,
			m.trainSeconds, m.trainFailures, m.persistSeconds, m.silences, m.aggregatorSilent, m.recovered, m.roundUpdates, m.accuracy, m.loss)
	}
	return m
}

func (m *Metrics) received(kind string, n int) {
	if m != nil {
		m.messagesIn.WithLabelValues(kind).Inc()
		m.bytesIn.Add(float64(n))
	}
}

func (m *Metrics) sent(kind string, n int) {
	if m != nil {
		m.messagesOut.WithLabelValues(kind).Inc()
		m.bytesOut.Add(float64(n))
	}
}

func (m *Metrics) sendFailed(kind string) {
	if m != nil {
		m.sendFailures.WithLabelValues(kind).Inc()
	}
}

func (m *Metrics) messageRejected(reason string) {
	if m != nil {
		m.messagesRejected.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) updateAccepted() {
	if m != nil {
		m.updatesAccepted.Inc()
	}
}

func (m *Metrics) updateRejected(reason string) {
	if m != nil {
		m.updatesRejected.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) setRound(r uint64) {
	if m != nil {
		m.round.Set(float64(r))
	}
}

func (m *Metrics) roundClosed(d time.Duration, advanced bool) {
	if m != nil {
		adv := "false"
		if advanced {
			adv = "true"
		}
		m.roundsClosed.WithLabelValues(adv).Inc()
		m.roundSeconds.Observe(d.Seconds())
	}
}

func (m *Metrics) trained(d time.Duration, err error) {
	if m != nil {
		m.trainSeconds.Observe(d.Seconds())
		if err != nil {
			m.trainFailures.Inc()
		}
	}
}

func (m *Metrics) persisted(d time.Duration) {
	if m != nil {
		m.persistSeconds.Observe(d.Seconds())
	}
}

func (m *Metrics) silent() {
	if m != nil {
		m.silences.Inc()
	}
}

func (m *Metrics) silence(on bool) {
	if m != nil {
		v := 0.0
		if on {
			v = 1
		}
		m.aggregatorSilent.Set(v)
	}
}

func (m *Metrics) evaluated(e storage.Eval) {
	if m != nil {
		m.accuracy.Set(e.Accuracy)
		m.loss.Set(e.Loss)
	}
}

func (m *Metrics) restored(n int) {
	if m != nil {
		m.recovered.Add(float64(n))
	}
}

func (m *Metrics) openRoundUpdates(n int) {
	if m != nil {
		m.roundUpdates.Set(float64(n))
	}
}
