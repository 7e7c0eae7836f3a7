#version 150
// Boxes drawn by instancing: one unit box, per-instance position, turn, size, colour and floors.
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform mat4 p3d_ModelViewMatrix;
uniform vec2 u_fog_range;  // view distance where fog starts and where it is total
in vec4 p3d_Vertex;
in vec4 i_offset;  // xyz: base centre; w: turn about z, radians
in vec4 i_scale;   // xyz: size; w: glow 0..1
in vec4 i_color;   // rgba
in vec4 i_extra;   // x: floors drawn as bands up the walls; y: window density 0..1
out vec3 v_pos;    // world position: the fragment shader derives the face normal from it
out vec4 v_color;
out float v_glow;
out float v_up;    // 0 at the base, 1 at the roof
out vec2 v_floors; // floors, window density
out float v_fog;

void main() {
    float c = cos(i_offset.w);
    float s = sin(i_offset.w);
    vec3 p = p3d_Vertex.xyz * i_scale.xyz;
    p = vec3(c * p.x - s * p.y, s * p.x + c * p.y, p.z);
    v_pos = p + i_offset.xyz;
    v_color = i_color;
    v_glow = i_scale.w;
    v_up = p3d_Vertex.z;
    v_floors = i_extra.xy;
    float dist = length((p3d_ModelViewMatrix * vec4(v_pos, 1.0)).xyz);
    v_fog = clamp((dist - u_fog_range.x) / max(u_fog_range.y - u_fog_range.x, 1e-3), 0.0, 1.0);
    gl_Position = p3d_ModelViewProjectionMatrix * vec4(v_pos, 1.0);
}
