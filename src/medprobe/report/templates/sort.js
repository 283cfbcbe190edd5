(function(){try{
function key(c){if(!c)return null;var s=c.getAttribute("data-sort");
 if(s!==null&&s!==""&&isFinite(+s))return +s;return c.hasAttribute("data-sort")?null:c.textContent.trim();}
function blank(v){return v===null||v==="";}
function cmp(a,b){if(typeof a==="number"&&typeof b==="number")return a-b;
 return String(a).localeCompare(String(b),undefined,{numeric:true});}
var tables=document.querySelectorAll("table.sortable");
for(var t=0;t<tables.length;t++){(function(table){
 if(!table.tHead||!table.tBodies.length)return;var heads=table.tHead.rows[0].cells;
 for(var i=0;i<heads.length;i++){(function(th,col){
  th.tabIndex=0;th.title="Sort by this column";
  function sort(){var body=table.tBodies[0];var up=th.getAttribute("aria-sort")!=="ascending";
   for(var h=0;h<heads.length;h++)heads[h].removeAttribute("aria-sort");
   th.setAttribute("aria-sort",up?"ascending":"descending");
   var rows=Array.prototype.slice.call(body.rows);
   rows.sort(function(r,s){var a=key(r.cells[col]),b=key(s.cells[col]);
    if(blank(a)||blank(b))return (blank(a)?1:0)-(blank(b)?1:0);  /* undefined values last either way */
    return up?cmp(a,b):-cmp(a,b);});
   for(var k=0;k<rows.length;k++)body.appendChild(rows[k]);}
  th.addEventListener("click",sort);
  th.addEventListener("keydown",function(e){if(e.key==="Enter"||e.key===" "){e.preventDefault();sort();}});
 })(heads[i],i);}
})(tables[t]);}
document.documentElement.setAttribute("data-sort-ready","1");
}catch(e){}})();
