package htk

import (
	"context"
	"errors"
	"io"
	"iter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	processesv1 "htk.dev/client/go/gen/htk/processes/v1"
)

// WatchState is where a watched stream stands, for a caller that shows it.
type WatchState string

const (
	// Connecting: the watch is opening its first stream.
	Connecting WatchState = "connecting"
	// Live: the stream answered.
	Live WatchState = "live"
	// Reconnecting: the stream broke; the watch waits, then opens it again.
	Reconnecting WatchState = "reconnecting"
)

// WatchOption changes how Watch follows its stream through breaks.
type WatchOption func(*watchConfig)

type watchConfig struct {
	firstDelay, maxDelay time.Duration
	attempts             int
	onState              func(WatchState)
}

// WithBackoff sets the pause before the first reconnection (default 1 s),
// which doubles after each failed one up to max (default 8 s).
func WithBackoff(first, max time.Duration) WatchOption {
	return func(c *watchConfig) { c.firstDelay, c.maxDelay = first, max }
}

// WithAttempts sets how many reconnections in a row may fail (without a
// message) before Watch gives up with the last error: default 10, about a
// minute.
func WithAttempts(attempts int) WatchOption {
	return func(c *watchConfig) { c.attempts = attempts }
}

// WithStateFunc has onState told each time the stream connects, answers,
// or breaks and waits to reconnect.
func WithStateFunc(onState func(WatchState)) WatchOption {
	return func(c *watchConfig) { c.onState = onState }
}

// The types of the events that finish a process, after which its stream ends.
var finishingEvents = map[string]bool{"completed": true, "failed": true, "cancelled": true}

// What opening the stream again cannot mend: the request is wrong (a
// process that is not there, a bad after_seq), not the caller's to make, or
// the token is no good. Everything else (unavailable, overloaded, cut) is
// worth a retry.
var refusals = map[codes.Code]bool{
	codes.InvalidArgument:    true,
	codes.NotFound:           true,
	codes.PermissionDenied:   true,
	codes.Unauthenticated:    true,
	codes.FailedPrecondition: true,
	codes.Unimplemented:      true,
}

// Watch follows one process until it finishes, through breaks (a server
// restarting, a worker killed, the network lost): after one it watches
// again from the last seq it delivered, so every event arrives exactly
// once, in order. It yields the snapshot (the whole process) first unless
// request.AfterSeq is set (or the process has finished with no event after
// it: then the snapshot alone), then the events; heartbeats are not yielded.
// A refused watch (NotFound, InvalidArgument, Unauthenticated, ...), ctx
// ending, or the attempts running out yields the error last.
//
//	for message, err := range client.Watch(ctx, &processesv1.WatchProcessRequest{ProcessId: id}) {
//		if err != nil { ... }
//		if event := message.GetEvent(); event != nil { ... }
//	}
func (c *Client) Watch(ctx context.Context, request *processesv1.WatchProcessRequest, options ...WatchOption) iter.Seq2[*processesv1.WatchProcessResponse, error] {
	config := watchConfig{firstDelay: time.Second, maxDelay: 8 * time.Second, attempts: 10, onState: func(WatchState) {}}
	for _, option := range options {
		option(&config)
	}
	return func(yield func(*processesv1.WatchProcessResponse, error) bool) {
		w := watch{client: c, request: proto.Clone(request).(*processesv1.WatchProcessRequest), yield: yield}
		pause, failures := config.firstDelay, 0
		config.onState(Connecting)
		for {
			answered, err := w.connect(ctx, func() {
				failures, pause = 0, config.firstDelay
				config.onState(Live)
			})
			switch {
			case w.stopped || (err == nil && w.finished):
				return
			case ctx.Err() != nil:
				yield(nil, ctx.Err())
				return
			case refusals[status.Code(err)]:
				yield(nil, err)
				return
			}
			if !answered {
				failures++
			}
			if failures >= config.attempts {
				if err == nil {
					err = status.Error(codes.Unavailable, "htk: the watch stream keeps ending without a message")
				}
				yield(nil, err)
				return
			}
			config.onState(Reconnecting)
			select {
			case <-ctx.Done():
				yield(nil, ctx.Err())
				return
			case <-time.After(pause):
			}
			pause = min(pause*2, config.maxDelay)
		}
	}
}

// watch is one Watch's progress across its streams.
type watch struct {
	client   *Client
	request  *processesv1.WatchProcessRequest
	yield    func(*processesv1.WatchProcessResponse, error) bool
	finished bool
	// The caller stopped ranging.
	stopped bool
}

// connect reads one stream until it ends; answered tells whether it sent
// anything. A nil error is a stream that ended by itself.
func (w *watch) connect(ctx context.Context, live func()) (answered bool, err error) {
	// Leaving (the caller's break, a break of the stream) closes the stream.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := w.client.Processes.WatchProcess(ctx, w.request)
	if err != nil {
		return false, err
	}
	for {
		message, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return answered, nil
		}
		if err != nil {
			return answered, err
		}
		if !answered {
			answered = true
			live()
		}
		// Whatever follows the finish (an error on its way) changes nothing.
		if !w.deliver(message) || w.finished {
			return answered, nil
		}
		if failure := message.GetError(); failure != nil {
			// The stream's in-band end; the call ends with the same status.
			return answered, status.ErrorProto(failure)
		}
	}
}

// deliver yields what the caller is to see of message and remembers where
// the process stands; false once the caller stopped.
func (w *watch) deliver(message *processesv1.WatchProcessResponse) bool {
	switch kind := message.Kind.(type) {
	case *processesv1.WatchProcessResponse_Process:
		w.request.AfterSeq = proto.Int32(kind.Process.Seq)
		w.finished = kind.Process.Status != "running"
	case *processesv1.WatchProcessResponse_Event:
		// After a resumption the server starts after AfterSeq; this guard
		// keeps the promise even against a server that did not.
		if w.request.AfterSeq != nil && kind.Event.Seq <= *w.request.AfterSeq {
			return true
		}
		w.request.AfterSeq = proto.Int32(kind.Event.Seq)
		w.finished = finishingEvents[kind.Event.Type]
	default:
		return true
	}
	w.stopped = !w.yield(message, nil)
	return !w.stopped
}
