package htk_test

// The watch's reconnection rules against a scripted server, without a
// network: what it resumes from, what it delivers once, when it gives up.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	htk "htk.dev/client/go"
	processesv1 "htk.dev/client/go/gen/htk/processes/v1"
)

// script is one connection: the messages it sends, then how it ends (nil: cleanly).
type script struct {
	messages []*processesv1.WatchProcessResponse
	end      error
}

// scripted is a ProcessService client whose WatchProcess plays its scripts,
// one per connection, and records each request's after_seq (-1: none).
type scripted struct {
	processesv1.ProcessServiceClient
	scripts   []script
	afterSeqs []int32
}

func (s *scripted) WatchProcess(_ context.Context, in *processesv1.WatchProcessRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[processesv1.WatchProcessResponse], error) {
	afterSeq := int32(-1)
	if in.AfterSeq != nil {
		afterSeq = *in.AfterSeq
	}
	s.afterSeqs = append(s.afterSeqs, afterSeq)
	if len(s.scripts) == 0 {
		return nil, errors.New("the watch connected once more than scripted")
	}
	next := s.scripts[0]
	s.scripts = s.scripts[1:]
	return &scriptedStream{script: next}, nil
}

type scriptedStream struct {
	grpc.ClientStream
	script script
}

func (s *scriptedStream) Recv() (*processesv1.WatchProcessResponse, error) {
	if len(s.script.messages) == 0 {
		if s.script.end == nil {
			return nil, io.EOF
		}
		return nil, s.script.end
	}
	message := s.script.messages[0]
	s.script.messages = s.script.messages[1:]
	return message, nil
}

func snapshot(seq int32, status string) *processesv1.WatchProcessResponse {
	return &processesv1.WatchProcessResponse{Kind: &processesv1.WatchProcessResponse_Process{Process: &processesv1.Process{Seq: seq, Status: status}}}
}

func event(seq int32, eventType string) *processesv1.WatchProcessResponse {
	return &processesv1.WatchProcessResponse{Kind: &processesv1.WatchProcessResponse_Event{Event: &processesv1.ProcessEvent{Seq: seq, Type: eventType}}}
}

var (
	heartbeat   = &processesv1.WatchProcessResponse{Kind: &processesv1.WatchProcessResponse_Heartbeat{Heartbeat: &processesv1.Heartbeat{}}}
	unavailable = status.Error(codes.Unavailable, "upstream connect error")
	fast        = htk.WithBackoff(time.Millisecond, 2*time.Millisecond)
)

// watched ranges over a watch of server: what it delivered, and the error it ended with.
func watched(server *scripted, request *processesv1.WatchProcessRequest, options ...htk.WatchOption) ([]string, error) {
	client := &htk.Client{Processes: server}
	var seen []string
	for message, err := range client.Watch(context.Background(), request, options...) {
		if err != nil {
			return seen, err
		}
		if event := message.GetEvent(); event != nil {
			seen = append(seen, fmt.Sprint("event ", event.Seq))
		} else {
			seen = append(seen, "process")
		}
	}
	return seen, nil
}

func TestWatchResumesAfterTheLastEventItDelivered(t *testing.T) {
	server := &scripted{scripts: []script{
		{messages: []*processesv1.WatchProcessResponse{snapshot(0, "running"), event(1, "progress"), event(2, "progress")}, end: unavailable},
		// A server that sent an event again: still delivered once.
		{messages: []*processesv1.WatchProcessResponse{heartbeat, event(2, "progress"), event(3, "progress")}},
		{messages: []*processesv1.WatchProcessResponse{event(4, "completed")}},
	}}
	seen, err := watched(server, &processesv1.WatchProcessRequest{ProcessId: "p"}, fast)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"process", "event 1", "event 2", "event 3", "event 4"}; !slices.Equal(seen, want) {
		t.Fatalf("want %v, got %v", want, seen)
	}
	// A stream that ended cleanly before the process finished is resumed too.
	if want := []int32{-1, 2, 3}; !slices.Equal(server.afterSeqs, want) {
		t.Fatalf("after_seq of each connection: want %v, got %v", want, server.afterSeqs)
	}
}

func TestWatchResumesFromTheSnapshotsSeqAndAfterAnInBandError(t *testing.T) {
	// Each event that finishes a process ends the watch: no connection follows it.
	for _, finish := range []string{"completed", "failed", "cancelled"} {
		t.Run(finish, func(t *testing.T) {
			inBand := &processesv1.WatchProcessResponse{Kind: &processesv1.WatchProcessResponse_Error{Error: &rpcstatus.Status{Code: int32(codes.Unavailable), Message: "shutting down"}}}
			server := &scripted{scripts: []script{
				{messages: []*processesv1.WatchProcessResponse{snapshot(5, "running"), inBand}},
				{messages: []*processesv1.WatchProcessResponse{event(6, finish)}},
			}}
			seen, err := watched(server, &processesv1.WatchProcessRequest{ProcessId: "p"}, fast)
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"process", "event 6"}; !slices.Equal(seen, want) {
				t.Fatalf("want %v, got %v", want, seen)
			}
			if want := []int32{-1, 5}; !slices.Equal(server.afterSeqs, want) {
				t.Fatalf("after_seq of each connection: want %v, got %v", want, server.afterSeqs)
			}
		})
	}
}

func TestWatchOfAFinishedProcessWithNothingAfterAfterSeqEndsWithItsSnapshot(t *testing.T) {
	server := &scripted{scripts: []script{{messages: []*processesv1.WatchProcessResponse{snapshot(4, "completed")}}}}
	seen, err := watched(server, &processesv1.WatchProcessRequest{ProcessId: "p", AfterSeq: proto.Int32(4)}, fast)
	if err != nil || !slices.Equal(seen, []string{"process"}) {
		t.Fatalf("want the snapshot alone, got %v, %v", seen, err)
	}
}

func TestWatchEndsAtOnceWhenRefused(t *testing.T) {
	server := &scripted{scripts: []script{{end: status.Error(codes.NotFound, "no such process")}}}
	_, err := watched(server, &processesv1.WatchProcessRequest{ProcessId: "p"}, fast)
	if status.Code(err) != codes.NotFound || len(server.afterSeqs) != 1 {
		t.Fatalf("want NotFound after one connection, got %v after %d", err, len(server.afterSeqs))
	}
}

func TestWatchGivesUpAfterItsAttemptsInARowWithoutAMessage(t *testing.T) {
	server := &scripted{scripts: []script{
		{messages: []*processesv1.WatchProcessResponse{snapshot(0, "running")}, end: unavailable},
		{end: unavailable}, {end: unavailable}, {end: unavailable},
	}}
	var states []htk.WatchState
	_, err := watched(server, &processesv1.WatchProcessRequest{ProcessId: "p"}, fast, htk.WithAttempts(3),
		htk.WithStateFunc(func(state htk.WatchState) { states = append(states, state) }))
	if status.Code(err) != codes.Unavailable || len(server.afterSeqs) != 4 {
		t.Fatalf("want Unavailable after four connections, got %v after %d", err, len(server.afterSeqs))
	}
	want := []htk.WatchState{htk.Connecting, htk.Live, htk.Reconnecting, htk.Reconnecting, htk.Reconnecting}
	if !slices.Equal(states, want) {
		t.Fatalf("states: want %v, got %v", want, states)
	}
}

func TestWatchStopsWhenTheCallerStops(t *testing.T) {
	server := &scripted{scripts: []script{{messages: []*processesv1.WatchProcessResponse{snapshot(0, "running"), event(1, "progress")}}}}
	client := &htk.Client{Processes: server}
	for range client.Watch(context.Background(), &processesv1.WatchProcessRequest{ProcessId: "p"}, fast) {
		break
	}
	if len(server.afterSeqs) != 1 {
		t.Fatalf("a watch left by the caller connected %d times", len(server.afterSeqs))
	}
}
