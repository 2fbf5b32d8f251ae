package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"text/template"
	"text/template/parse"
)

// The functions the limit checks call. They are not in the function map
// templates are parsed with, so no template can call them; they appear in
// the text of an error that stops a render.
const (
	tickFunc    = "renderLimit"
	enterFunc   = "renderEnter"
	leaveFunc   = "renderLeave"
	printedFunc = "renderPrinted"
)

// program is a parsed template with the render limits built into its parse
// trees: a check at the start of every range iteration, at the start and
// end of every template body (when templates call templates), and, for
// templates that change maps in place, before every printed value. It
// executes as a clone of itself whose checks and guarded functions close
// over that execution's budget; clones are pooled, since cloning copies
// the whole function map.
type program struct {
	tmpl *template.Template
	// guarded are the functions the template calls that get checks.
	guarded []string
	// ticks: the template has a range; nests: a template call; strict:
	// it calls a function that changes a map in place.
	ticks, nests, strict bool
	pool                 sync.Pool // *execution
}

// execution is a clone of a program bound to one budget.
type execution struct {
	tmpl *template.Template
	b    budget
}

// parseProgram parses src as the template name and builds the limit
// checks in.
func parseProgram(name, src string) (*program, error) {
	t, err := newTemplate(name).Parse(src)
	if err != nil {
		return nil, err
	}
	p := &program{tmpl: t}
	var trees []*parse.Tree
	for _, tt := range t.Templates() {
		if tt.Tree != nil && tt.Root != nil {
			trees = append(trees, tt.Tree)
		}
	}
	used := map[string]bool{}
	for _, tr := range trees {
		inspect(tr.Root, func(n parse.Node) {
			switch n := n.(type) {
			case *parse.IdentifierNode:
				used[n.Ident] = true
			case *parse.RangeNode:
				p.ticks = true
			case *parse.TemplateNode:
				p.nests = true
			}
		})
	}
	for name := range used {
		if mutators[name] {
			p.strict = true
		}
		if guardable(name) {
			p.guarded = append(p.guarded, name)
		}
	}
	slices.Sort(p.guarded)
	for _, tr := range trees {
		p.instrument(tr, tr.Root)
		if p.nests {
			pos := tr.Root.Pos
			tr.Root.Nodes = append([]parse.Node{checkNode(tr, pos, enterFunc)}, tr.Root.Nodes...)
			tr.Root.Nodes = append(tr.Root.Nodes, checkNode(tr, pos, leaveFunc))
		}
	}
	return p, nil
}

// direct reports whether the program runs as parsed: nothing in it loops,
// calls a template or makes a value that could be large.
func (p *program) direct() bool {
	return !p.ticks && !p.nests && !p.strict && len(p.guarded) == 0
}

// inspect calls fn for n and every node under it.
func inspect(n parse.Node, fn func(parse.Node)) {
	if n == nil {
		return
	}
	fn(n)
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			inspect(c, fn)
		}
	case *parse.ActionNode:
		inspect(n.Pipe, fn)
	case *parse.IfNode:
		inspectBranch(&n.BranchNode, fn)
	case *parse.RangeNode:
		inspectBranch(&n.BranchNode, fn)
	case *parse.WithNode:
		inspectBranch(&n.BranchNode, fn)
	case *parse.TemplateNode:
		inspect(n.Pipe, fn)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			inspect(c, fn)
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			inspect(a, fn)
		}
	case *parse.ChainNode:
		inspect(n.Node, fn)
	}
}

func inspectBranch(b *parse.BranchNode, fn func(parse.Node)) {
	inspect(b.Pipe, fn)
	if b.List != nil {
		inspect(b.List, fn)
	}
	if b.ElseList != nil {
		inspect(b.ElseList, fn)
	}
}

// instrument puts a check at the start of every range body under n and,
// for strict programs, a check of the value every action prints.
func (p *program) instrument(tr *parse.Tree, list *parse.ListNode) {
	if list == nil {
		return
	}
	for _, n := range list.Nodes {
		switch n := n.(type) {
		case *parse.ActionNode:
			if p.strict && len(n.Pipe.Decl) == 0 {
				id := parse.NewIdentifier(printedFunc).SetTree(tr).SetPos(n.Pos)
				n.Pipe.Cmds = append(n.Pipe.Cmds, &parse.CommandNode{NodeType: parse.NodeCommand, Pos: n.Pos, Args: []parse.Node{id}})
			}
		case *parse.IfNode:
			p.instrument(tr, n.List)
			p.instrument(tr, n.ElseList)
		case *parse.WithNode:
			p.instrument(tr, n.List)
			p.instrument(tr, n.ElseList)
		case *parse.RangeNode:
			p.instrument(tr, n.List)
			p.instrument(tr, n.ElseList)
			if n.List != nil {
				n.List.Nodes = append([]parse.Node{checkNode(tr, n.Pos, tickFunc)}, n.List.Nodes...)
			}
		}
	}
}

// checkNode is {{if fn}}{{end}}: a call of fn that prints nothing and
// declares no variable. Errors it returns name the position pos.
func checkNode(tr *parse.Tree, pos parse.Pos, fn string) parse.Node {
	id := parse.NewIdentifier(fn).SetTree(tr).SetPos(pos)
	cmd := &parse.CommandNode{NodeType: parse.NodeCommand, Pos: pos, Args: []parse.Node{id}}
	pipe := &parse.PipeNode{NodeType: parse.NodePipe, Pos: pos, Cmds: []*parse.CommandNode{cmd}}
	return &parse.IfNode{BranchNode: parse.BranchNode{
		NodeType: parse.NodeIf, Pos: pos, Pipe: pipe,
		List: &parse.ListNode{NodeType: parse.NodeList, Pos: pos},
	}}
}

// get returns an execution of p from the pool, or a new one.
func (p *program) get() (*execution, error) {
	if x, ok := p.pool.Get().(*execution); ok {
		return x, nil
	}
	t, err := p.tmpl.Clone()
	if err != nil {
		return nil, err
	}
	x := &execution{tmpl: t}
	x.b.strict = p.strict
	fm := template.FuncMap{}
	for _, name := range p.guarded {
		fm[name] = x.b.guard(name, x.b.guardedFunc(name))
	}
	if p.ticks {
		fm[tickFunc] = x.b.tick
	}
	if p.nests {
		fm[enterFunc] = x.b.enter
		fm[leaveFunc] = x.b.leave
	}
	if p.strict {
		fm[printedFunc] = x.b.printed
	}
	t.Funcs(fm)
	return x, nil
}

// execute renders p with data into w, within the engine's limits and until
// ctx ends.
func (e *Engine) execute(ctx context.Context, p *program, w *limitWriter, data any) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("render stopped: %w", err)
	}
	var err error
	if p.direct() {
		err = p.tmpl.Execute(w, data)
	} else {
		var x *execution
		if x, err = p.get(); err != nil {
			return err
		}
		x.b.reset(ctx, e.lim)
		err = x.tmpl.Execute(w, data)
		x.b.ctx = nil
		p.pool.Put(x)
	}
	if err != nil {
		e.countLimit(err)
	}
	return err
}

// countLimit counts a render stopped by a limit.
func (e *Engine) countLimit(err error) {
	var le *LimitError
	if !errors.As(err, &le) {
		return
	}
	switch le.Kind {
	case LimitTimeout:
		e.limitHits[0].Add(1)
	case LimitSize:
		e.limitHits[1].Add(1)
	case LimitNesting:
		e.limitHits[2].Add(1)
	}
}

// output returns a writer into buf that takes at most max bytes.
func (e *Engine) output(buf *bytes.Buffer, max int) *limitWriter {
	return &limitWriter{buf: buf, max: max, maxBytes: e.lim.maxBytes}
}
